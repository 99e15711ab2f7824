"""Differentiable, seeded robustness transforms applied to the images before the model sees them.

Feature visualisation without them finds adversarial pixel noise; random shifts, zooms and rotations at
every step make only features that survive them pay off (Olah et al., "Feature Visualization"; Lucid's
`standard_transforms`). Each transform is `t(x, generator) -> x` on [n, 3, H, W] images in [0, 1]: every
random number comes from the generator passed in (a CPU `torch.Generator`), never from the global RNG,
so the same seed gives the same result. The warps run on kornia and keep values inside [0, 1].
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import kornia.geometry.transform as KT
import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.errors import UserInputError

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, like: Tensor) -> Tensor:
    """n uniform samples in [lo, hi], drawn on the CPU generator and moved to like's device and dtype."""
    return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device=like.device, dtype=like.dtype)


class Pad:
    """Pad every side by a fixed number of pixels (grey by default), so later warps have margin to eat."""

    def __init__(self, pad: int, mode: str = "constant", value: float = 0.5):
        if pad < 0:
            raise UserInputError(f"pad must be >= 0, got {pad}")
        self.pad, self.mode, self.value = pad, mode, value

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x padded by self.pad on each side (draws nothing from g)."""
        if self.pad == 0:
            return x
        p = (self.pad,) * 4
        # Constant grey rather than zeros: a black frame is a strong edge the objective could exploit.
        return F.pad(x, p, mode=self.mode, value=self.value) if self.mode == "constant" else F.pad(x, p, mode=self.mode)


class Jitter:
    """Random crop that drops `d` pixels in total from each axis: a shift by up to d pixels (Lucid's jitter)."""

    def __init__(self, d: int):
        if d < 0:
            raise UserInputError(f"jitter must be >= 0 pixels, got {d}")
        self.d = d

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """One random (H-d) x (W-d) crop, the same offset for the whole batch."""
        if self.d == 0:
            return x
        h, w = x.shape[-2:]
        if self.d >= min(h, w):
            raise UserInputError(f"jitter of {self.d} px leaves nothing of a {h}x{w} image")
        dy, dx = (int(v) for v in torch.randint(0, self.d + 1, (2,), generator=g))
        return x[..., dy:dy + h - self.d, dx:dx + w - self.d]


class RandomScale:
    """Zoom each image about its centre by a factor drawn uniformly from [lo, hi] (size unchanged)."""

    def __init__(self, lo: float = 0.9, hi: float = 1.1, padding_mode: str = "reflection"):
        if not 0 < lo <= hi:
            raise UserInputError(f"scales must satisfy 0 < lo <= hi, got {lo}, {hi}")
        self.lo, self.hi, self.padding_mode = lo, hi, padding_mode

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x with each image zoomed by its own random factor."""
        factor = _uniform(x.shape[0], self.lo, self.hi, g, x)
        return KT.scale(x, factor[:, None].expand(-1, 2), padding_mode=self.padding_mode)


class RandomRotate:
    """Rotate each image about its centre by an angle drawn uniformly from [-degrees, degrees]."""

    def __init__(self, degrees: float = 10.0, padding_mode: str = "reflection"):
        if degrees < 0:
            raise UserInputError(f"degrees must be >= 0, got {degrees}")
        self.degrees, self.padding_mode = degrees, padding_mode

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x with each image rotated by its own random angle."""
        angle = _uniform(x.shape[0], -self.degrees, self.degrees, g, x)
        return KT.rotate(x, angle, padding_mode=self.padding_mode)


class Cutout:
    """Fill `count` random squares of side `frac` of the image with grey (random erasing, not CLIP-style crops).

    Hiding parts of the image pushes the objective to be met by more than one small region.
    """

    def __init__(self, count: int = 1, frac: float = 0.25, value: float = 0.5):
        if count < 0 or not 0 < frac <= 1:
            raise UserInputError(f"cutout needs count >= 0 and 0 < frac <= 1, got {count}, {frac}")
        self.count, self.frac, self.value = count, frac, value

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x with each image's own random squares replaced by grey."""
        n, _, h, w = x.shape
        if self.count == 0:
            return x
        side = max(1, round(self.frac * min(h, w)))
        top = torch.randint(0, h - side + 1, (n, self.count), generator=g).to(x.device)
        left = torch.randint(0, w - side + 1, (n, self.count), generator=g).to(x.device)
        ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
        inside = ((ys >= top[..., None, None]) & (ys < top[..., None, None] + side)
                  & (xs >= left[..., None, None]) & (xs < left[..., None, None] + side))
        hole = inside.any(dim=1, keepdim=True)  # [n, 1, h, w], shared by the three channels
        # torch.where instead of in-place assignment: x stays untouched for autograd; holes get zero gradient.
        return torch.where(hole, torch.full_like(x, self.value), x)


class Roll:
    """Circular shift of the whole batch by up to `d` pixels on each axis (DeepInversion's jitter: no border)."""

    def __init__(self, d: int):
        if d < 0:
            raise UserInputError(f"roll must be >= 0 pixels, got {d}")
        self.d = d

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x rolled by one random (dy, dx) in [-d, d], the same for every image."""
        if self.d == 0:
            return x
        dy, dx = (int(v) for v in torch.randint(-self.d, self.d + 1, (2,), generator=g))
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


class Flip:
    """Mirror the whole batch left-right with probability p."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise UserInputError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x, flipped or not by one draw for the batch."""
        return torch.flip(x, dims=(3,)) if bool(torch.rand((), generator=g) < self.p) else x


class ZoomCrop:
    """A random square crop of (1 - zoom * u) of the side, u uniform in [0, 1], the same window for the batch."""

    def __init__(self, zoom: float):
        if not 0 <= zoom < 1:
            raise UserInputError(f"zoom must be in [0, 1), got {zoom}")
        self.zoom = zoom

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """A crop of x; resize it afterwards (Resize) to feed the model a fixed size."""
        if self.zoom == 0:
            return x
        side = min(x.shape[-2:])
        crop = max(8, round(side * (1 - self.zoom * float(torch.rand((), generator=g)))))
        top, left = (int(v) for v in torch.randint(0, side - crop + 1, (2,), generator=g))
        return x[..., top:top + crop, left:left + crop]


class Resize:
    """Bilinear resize to size x size (antialiased when shrinking): the model's input size, or a coarser one."""

    def __init__(self, size: int):
        if size < 1:
            raise UserInputError(f"resize needs a positive size, got {size}")
        self.size = size

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        """x at self.size (draws nothing from g)."""
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=self.size < min(x.shape[-2:]))


class Schedule:
    """Transforms that change with the step: `pick(step, steps)` returns the Compose to use at that step.

    The render loop asks `at(step, steps)` every step, e.g. a coarse resolution for the first half of a render
    (DeepInversion's multi-resolution schedule) and the full one afterwards.
    """

    def __init__(self, pick: Callable[[int, int], "Compose"]):
        self.pick = pick

    def at(self, step: int, steps: int) -> "Compose":
        """The transforms of this step."""
        return self.pick(step, steps)


class Compose:
    """Transforms applied in order, with their own seeded generator unless one is passed in."""

    def __init__(self, transforms: Sequence[Transform], seed: int = 0):
        self.transforms = list(transforms)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x through every transform, drawing from generator (or this object's own)."""
        g = self.generator if generator is None else generator
        for t in self.transforms:
            x = t(x, g)
        return x

    def __len__(self) -> int:
        return len(self.transforms)


def standard(size: int, cutouts: int = 0) -> Compose:
    """Lucid's standard transforms (pad, jitter, scale, rotate, jitter) scaled from 224 px to `size`."""
    # Lucid's pixel amounts were chosen at 224 px; a fixed 12 px pad would be a tenth of a 128 px image.
    k = size / 224
    ts: list[Transform] = [
        Pad(max(1, math.ceil(12 * k))),
        Jitter(max(1, round(8 * k))),
        RandomScale(0.9, 1.1),
        RandomRotate(10.0),
        Jitter(max(1, round(4 * k))),
    ]
    if cutouts:
        ts.append(Cutout(cutouts, 0.25))
    return Compose(ts)
