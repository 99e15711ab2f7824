"""Robustness transforms: differentiable, seeded, shape- and range-preserving where they should be."""
import pytest
import torch

from brivl.viz import transforms as T

ALL = {
    "pad": T.Pad(4),
    "pad_reflect": T.Pad(3, mode="reflect"),
    "jitter": T.Jitter(5),
    "scale": T.RandomScale(0.8, 1.2),
    "rotate": T.RandomRotate(20.0),
    "cutout": T.Cutout(2, 0.3),
    "roll": T.Roll(6),
    "flip": T.Flip(0.5),
    "zoomcrop": T.ZoomCrop(0.5),
}


def _images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ALL))
def test_gradient_flows_through_each_transform(name):
    x = _images().requires_grad_(True)
    y = ALL[name](x, torch.Generator().manual_seed(0))
    (y * torch.linspace(0, 1, y.shape[-1])).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()  # every image of the batch gets a gradient


@pytest.mark.parametrize("name", list(ALL))
def test_values_stay_in_the_unit_range(name):
    y = ALL[name](_images(), torch.Generator().manual_seed(1))
    assert y.min() >= -1e-5 and y.max() <= 1 + 1e-5


def test_shapes():
    x = _images(size=32)
    g = torch.Generator().manual_seed(0)
    assert T.Pad(4)(x, g).shape == (3, 3, 40, 40)
    assert T.Jitter(5)(x, g).shape == (3, 3, 27, 27)
    for t in (T.RandomScale(), T.RandomRotate(), T.Cutout()):
        assert t(x, g).shape == x.shape


@pytest.mark.parametrize("name", ["jitter", "scale", "rotate", "cutout"])
def test_same_seed_same_result_different_seed_differs(name):
    x = _images()
    t = ALL[name]
    a = t(x, torch.Generator().manual_seed(3))
    b = t(x, torch.Generator().manual_seed(3))
    c = [t(x, torch.Generator().manual_seed(s)) for s in range(4, 8)]
    assert torch.equal(a, b)
    assert any(not torch.equal(a, ci) for ci in c)


def test_random_transforms_do_not_touch_the_global_rng():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    T.standard(32, cutouts=2)(_images())
    assert torch.equal(torch.rand(3), before)


def test_compose_is_seeded_and_advances():
    x = _images()
    a1, a2 = T.standard(32, cutouts=1), T.standard(32, cutouts=1)
    first, again = a1(x), a2(x)
    assert torch.equal(first, again)
    assert not torch.equal(a1(x), first)  # the generator moves on: a new draw each step


def test_scale_and_rotate_draw_per_image():
    x = _images(n=1).expand(4, -1, -1, -1)  # the same image four times
    y = T.RandomRotate(30.0)(x, torch.Generator().manual_seed(0))
    assert not torch.equal(y[0], y[1])


def test_identity_settings_leave_images_unchanged():
    x = _images()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(T.Pad(0)(x, g), x)
    assert torch.equal(T.Jitter(0)(x, g), x)
    assert torch.allclose(T.RandomRotate(0.0)(x, g), x, atol=1e-5)
    assert torch.allclose(T.RandomScale(1.0, 1.0)(x, g), x, atol=1e-5)


def test_cutout_fills_square_holes_with_grey():
    x = torch.zeros(2, 3, 20, 20)
    y = T.Cutout(1, 0.25, value=0.5)(x, torch.Generator().manual_seed(0))
    holes = (y == 0.5).all(dim=1)
    assert holes.flatten(1).sum(dim=1).tolist() == [25, 25]  # one 5x5 square each


def test_bad_arguments_are_refused_too():
    for bad in (lambda: T.Roll(-1), lambda: T.Flip(1.5), lambda: T.ZoomCrop(1.0), lambda: T.Resize(0)):
        with pytest.raises(ValueError):
            bad()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        T.Jitter(40)(_images(size=32), torch.Generator())
    with pytest.raises(ValueError):
        T.RandomScale(1.2, 0.8)
    with pytest.raises(ValueError):
        T.Cutout(1, 0.0)


def test_roll_flip_and_zoomcrop_do_what_deepinversion_does():
    x = _images(n=2, size=32)
    rolled = T.Roll(4)(x, torch.Generator().manual_seed(3))
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
              if torch.equal(torch.roll(x, (dy, dx), dims=(2, 3)), rolled)]
    assert len(shifts) == 1 and shifts[0] != (0, 0)  # one circular shift, the same for the whole batch
    flips = [torch.equal(T.Flip(0.5)(x, torch.Generator().manual_seed(s)), x.flip(3)) for s in range(40)]
    assert 10 < sum(flips) < 30  # about half the draws mirror
    assert torch.equal(T.Flip(0.0)(x, torch.Generator()), x) and torch.equal(T.Flip(1.0)(x, torch.Generator()), x.flip(3))
    sides = {T.ZoomCrop(0.5)(x, torch.Generator().manual_seed(s)).shape[-1] for s in range(30)}
    assert min(sides) >= 16 and max(sides) <= 32 and len(sides) > 5  # crops of 1 - 0.5 u of the side


def test_resize_and_schedule():
    x = _images(n=2, size=32)
    assert T.Resize(16)(x, torch.Generator()).shape == (2, 3, 16, 16)
    assert T.Resize(32)(x, torch.Generator()) is x
    low, full = T.Compose([T.Resize(8)]), T.Compose([])
    schedule = T.Schedule(lambda step, steps: low if step < steps // 2 else full)
    assert [schedule.at(s, 4) for s in range(4)] == [low, low, full, full]
