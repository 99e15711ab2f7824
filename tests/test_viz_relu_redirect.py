"""Redirected ReLU gradients: a render reaches units that are dead at its start, and nothing else changes."""
import torch
from torch import nn

import brivl
from brivl.viz import objectives as O
from brivl.viz.param import image
from brivl.viz.relu_redirect import redirected_relus
from brivl.viz.render_loop import render


def _dead_net():
    # Every unit of the ReLU6 starts clamped low on a grey image (bias -5), so its gradient is zero.
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU6(inplace=True))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-5.0)
    return net


def test_a_dead_unit_gets_a_gradient_only_within_the_block_and_values_stay():
    net = _dead_net()
    x = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
    y = net(x)
    (grad,) = torch.autograd.grad(y[:, 0].mean(), x)
    assert y.abs().max() == 0 and grad.abs().max() == 0
    # Gradients of a loss to minimise, as render takes them: the loss is minus the channel.
    with redirected_relus(net) as state:
        y2 = net(x)
        (grad2,) = torch.autograd.grad(-y2[:, 0].mean(), x)
        state.active = False  # switched off: the usual (zero) gradient again
        (off,) = torch.autograd.grad(-net(x)[:, 0].mean(), x)
    assert state.count == 1 and torch.equal(y2, y) and off.abs().max() == 0
    assert (grad2 < 0).all()  # a descent step raises every input, towards the live range
    assert net[1].inplace and not net[1]._forward_hooks  # restored
    # Minimising the dead channel would push it further down: that gradient stays blocked.
    with redirected_relus(net):
        (grad3,) = torch.autograd.grad(net(x)[:, 0].mean(), x)
    assert grad3.abs().max() == 0


def test_live_gradients_are_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 2, 1))
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    (plain,) = torch.autograd.grad(net(x).sum(), x)
    with redirected_relus(net):
        (redirected,) = torch.autograd.grad(net(x).sum(), x)
    assert plain.abs().max() > 0 and torch.equal(plain, redirected)


def test_brivl_lite_llp_channel_rises_from_a_flat_start_only_with_redirection():
    model = brivl.load("brivl-lite")
    grey = lambda: image(1, 64, "pixel", False, seed=0)  # noqa: E731
    results = {}
    for redirect in (False, True):
        init = grey()
        with torch.no_grad():
            init.pixels.fill_(0.0)  # sigmoid(0) = 0.5: a flat grey image
        out = render(model, O.channel("llp", 108), steps=12, init=init, lr=0.05, transforms=None,
                     redirect_relu=redirect)
        results[redirect] = out
    assert results[False].history.abs().max() == 0
    assert torch.allclose(results[False].images, torch.full_like(results[False].images, 0.5), atol=1e-6)
    assert results[True].history[-1].item() > 0.05


def test_renders_in_two_threads_on_one_model_each_redirect_only_their_own():
    """The studio renders for several pages at once on one model: each render's redirect stays in its thread."""
    import threading

    from brivl import viz

    model = brivl.load("tiny")
    alone = [viz.imagine(model, [t], steps=6, size=48, seed=1, progress=False).images for t in ("sea", "fire")]
    out, errors = {}, []

    def run(i: int, text: str) -> None:
        try:
            out[i] = viz.imagine(model, [text], steps=6, size=48, seed=1, progress=False).images
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(("sea", "fire"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(torch.equal(out[i], alone[i]) for i in range(2))  # the same images as each alone
    assert not any(m._forward_hooks for m in model.modules())  # every hook removed
