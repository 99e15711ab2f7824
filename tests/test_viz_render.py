"""The render loop and the high-level calls: objectives rise, one prompt per row, seeding, the NaN guard,
progress callbacks, and a model left exactly as it was.

The `tiny` model has random weights: its image embedding responds to pixel-grid-aligned patterns that a
one-pixel shift destroys, so the standard robustness transforms (made for trained models) leave it nearly
flat. Tests that check an objective rises therefore render without transforms; they prove the optimiser,
not the image prior.
"""
import pytest
import torch

from brivl import viz
from brivl.viz import objectives as O

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# 128 px is the tiny model's own input size: no resize inside encode_image, so each step is cheapest.
FAST = {"size": 128, "transforms": None, "lr": 0.1, "progress": False}


def _cos(model, images, texts):
    with torch.no_grad():
        return model.encode_image(images) @ model.encode_text(texts).T


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def _grads(model):
    # Compared before and after rather than checked for None: the session's tiny model is shared with other tests.
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def _same_grads(a, b):
    same = [(x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
            for x, y in zip(a, b, strict=True)]
    return all(same)


def test_text_objective_raises_the_image_text_cosine(tiny):
    start = viz.param.image(1, 128, "fft", seed=0)().detach()
    out = viz.imagine(tiny, "forest", steps=20, seed=0, **FAST)
    before, after = _cos(tiny, start, ["forest"]).item(), _cos(tiny, out.images, ["forest"]).item()
    # Random images all sit within ~0.03 of each other on this model (cosine about -0.14 to -0.11);
    # twenty steps must move far outside that band.
    assert after > before + 0.15, (before, after)
    assert out.history.shape == (20, 1)
    assert out.history[-1, 0] > out.history[0, 0] + 0.1


def test_channel_objective_raises_the_channel_at_least_five_fold(tiny):
    noise = torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        baseline = O.evaluate(O.channel("llp", 108), tiny, noise).abs().max().item()
    out = viz.neuron(tiny, layer="llp", channel=108, text=None, steps=15, seed=0, **FAST)
    with torch.no_grad():
        reached = O.evaluate(O.channel("llp", 108), tiny, out.images).item()
    assert reached >= 5 * baseline, (baseline, reached)


def test_two_prompts_in_one_batch_each_row_gets_its_own(tiny):
    prompts = ["forest", "a"]
    out = viz.imagine(tiny, prompts, steps=20, seed=0, **FAST)
    swapped = viz.imagine(tiny, prompts[::-1], steps=20, seed=0, **FAST)  # same start images, prompts swapped
    assert out.images.shape == (2, 3, 128, 128)
    sim, sim_swapped = _cos(tiny, out.images, prompts), _cos(tiny, swapped.images, prompts)  # [row, prompt]
    # The random text tower gives each text its own offset ("forest" scores above "a" with every image), so
    # compare how much better a row matches prompt 0 than prompt 1 when the same start image was rendered
    # for prompt 0 rather than for prompt 1.
    margin, margin_swapped = sim[:, 0] - sim[:, 1], sim_swapped[:, 0] - sim_swapped[:, 1]
    assert margin[0] > margin_swapped[0] + 0.03, (margin, margin_swapped)  # row 0: prompt 0 here, 1 there
    assert margin[1] < margin_swapped[1] - 0.03, (margin, margin_swapped)  # row 1: prompt 1 here, 0 there
    # And each prompt is matched best by the row rendered for it.
    assert sim[0, 0] > sim[1, 0] and sim[1, 1] > sim[0, 1], sim


def test_same_seed_same_image_different_seed_differs(tiny):
    kw = {"steps": 3, "size": 64, "progress": False}  # standard transforms on: their draws are seeded too
    a = viz.imagine(tiny, "forest", seed=1, **kw).images
    b = viz.imagine(tiny, "forest", seed=1, **kw).images
    c = viz.imagine(tiny, "forest", seed=2, **kw).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class _NaNAfter:
    """A TwoTower wrapper whose encode_image returns NaN from its (k+1)-th call on."""

    def __init__(self, model, k):
        self.model, self.k, self.calls = model, k, 0
        self.image_size, self.embed_dim = model.image_size, model.embed_dim

    def encode_text(self, texts):
        return self.model.encode_text(texts)

    def encode_image(self, pixels):
        self.calls += 1
        out = self.model.encode_image(pixels)
        return out * float("nan") if self.calls > self.k else out

    def feature_layers(self):
        return self.model.feature_layers()


@pytest.mark.parametrize("k", [0, 2])
def test_nan_guard_names_the_step(tiny, k):
    with pytest.raises(viz.RenderDivergedError, match=f"step {k} of 5") as err:
        viz.imagine(_NaNAfter(tiny, k), "forest", steps=5, size=32, progress=False)
    assert err.value.step == k
    assert "NaN" in str(err.value)


def test_callback_gets_images_every_k_steps_and_the_final_images(tiny):
    calls = []
    out = viz.imagine(tiny, ["forest", "sea"], steps=5, size=32, every=2, progress=False,
                      callback=lambda step, images: calls.append((step, images.clone())))
    assert [s for s, _ in calls] == [0, 2, 4, 5]
    for _, images in calls:
        assert images.shape == (2, 3, 32, 32) and not images.requires_grad
        assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(calls[-1][1], out.images)
    assert not torch.equal(calls[0][1], out.images)


def test_model_is_left_untouched(tiny):
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    grads = _grads(tiny)
    hooks = _hook_count(tiny)
    tiny.train()  # a caller's mode is restored afterwards; BatchNorm statistics must not move meanwhile
    try:
        viz.neuron(tiny, channel=3, text="forest", steps=2, size=32, progress=False)
        assert tiny.training
    finally:
        tiny.eval()
    assert _hook_count(tiny) == hooks
    assert _same_grads(_grads(tiny), grads)  # no gradient accumulated into the weights
    assert all(torch.equal(v, state[k]) for k, v in tiny.state_dict().items())


def test_render_takes_composed_objectives_and_custom_parameterisations(tiny):
    init = viz.param.image(2, 48, "pixel", decorrelate=False, seed=3)
    obj = O.text_match("forest") - 0.1 * O.total_variation() + 0.5 * O.diversity("llp")
    out = viz.render(tiny, obj, steps=2, init=init, progress=False)
    assert out.images.shape == (2, 3, 48, 48) and out.history.shape == (2, 2)
    with pytest.raises(ValueError, match="rows"):
        viz.render(tiny, O.text_match(["a", "b"]), batch=3, steps=1, progress=False)
    with pytest.raises(KeyError, match="llp"):
        viz.render(tiny, O.channel("no-such-layer", 0), steps=1, size=32, progress=False)


def test_penalties_lower_what_they_penalise(tiny):
    kw = {"steps": 8, "seed": 0, **FAST}
    free = viz.imagine(tiny, "forest", **kw).images
    smooth = viz.imagine(tiny, "forest", tv=5.0, **kw).images
    tv = O.total_variation()
    assert O.evaluate(tv, tiny, smooth).item() < O.evaluate(tv, tiny, free).item()


def test_objectives_that_ignore_the_image_are_refused(tiny):
    constant = viz.Objective(lambda ctx: torch.zeros(ctx.n), "constant")
    with pytest.raises(ValueError, match="does not depend on the image"):
        viz.render(tiny, constant, steps=1, size=32, progress=False)
    weights_only = viz.Objective(lambda ctx: next(tiny.parameters()).sum().expand(ctx.n), "weights")
    with pytest.raises(ValueError, match="does not depend on the image"):
        viz.render(tiny, weights_only, steps=1, size=32, progress=False)


def test_progress_bar_when_asked(tiny, capsys):
    viz.imagine(tiny, "forest", steps=2, size=32, progress=True)
    assert "2/2" in capsys.readouterr().err
    viz.imagine(tiny, "forest", steps=2, size=32)  # not a terminal under pytest: no bar by default
    assert "2/2" not in capsys.readouterr().err


def test_copies_render_several_views_per_step_and_still_raise_the_cosine(tiny):
    seen = []
    original = tiny.encode_image

    def counting(pixels):
        seen.append(pixels.shape[0])
        return original(pixels)

    tiny.encode_image = counting
    try:
        out = viz.imagine(tiny, "forest", steps=20, seed=0, copies=3, **FAST)
    finally:
        del tiny.encode_image
    assert out.images.shape == (1, 3, 128, 128) and set(seen[:20]) == {3}  # three views of the one image per step
    assert out.history[-1, 0] > out.history[0, 0] + 0.1
    with pytest.raises(ValueError, match="copies"):
        viz.render(tiny, O.text_match("forest"), steps=1, copies=0)


def test_optimizer_and_scheduler_factories_and_scheduled_transforms(tiny):
    from brivl.viz import transforms as T
    made, seen = [], []
    coarse, fine = T.Compose([T.Resize(16)]), T.Compose([])

    def pick(step, steps):
        seen.append((step, steps))
        return coarse if step < 2 else fine

    def sgd(params):
        made.append(torch.optim.SGD(params, lr=0.5))
        return made[-1]

    # A learning rate that drops to 0 after the first update: the images then stop moving.
    stop_after_one = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 if step == 0 else 0.0)
    calls = []
    out = viz.render(tiny, O.text_match("forest"), steps=4, size=32, progress=False, every=1, optimizer=sgd,
                     scheduler=stop_after_one, transforms=T.Schedule(pick), redirect_relu=False,
                     callback=lambda step, images: calls.append(images))
    assert len(made) == 1 and isinstance(made[0], torch.optim.SGD)
    assert seen == [(s, 4) for s in range(4)]
    assert not torch.equal(calls[0], calls[1])  # the first update moved the images
    assert torch.equal(calls[1], calls[2]) and torch.equal(calls[2], out.images)  # lr 0 afterwards
