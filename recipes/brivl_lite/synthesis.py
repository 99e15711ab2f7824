"""Synthetic training images without data: DeepInversion of a frozen ImageNet classifier, and procedural images.

`synthesize` optimises images so that the teacher predicts the target classes while every
BatchNorm layer sees batch statistics close to its running statistics (Yin et al., "Dreaming to
Distill", CVPR 2020), with total-variation and L2 image priors. The images are parameterised in a
colour-decorrelated Fourier basis (Olah et al., "Feature Visualization", Distill 2017), which on a
CPU budget of a few hundred steps gives far less high-frequency noise than raw pixels.
`procedural_images` draws cheap non-photographic variety (gradients, stripes, checks, blobs, noise
textures, shapes).

Everything draws from seeded `torch.Generator`s, never the global RNG, so a seed fixes the output.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brivl.errors import DivergedError
from brivl.frozen import frozen
from brivl.lite.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from brivl.viz.objectives import squared_total_variation
from brivl.viz.param import FFTImage

# DeepInversion weights the first BN layer's statistics 10x: it sees nearly raw pixels, and matching its
# statistics is what keeps colours and contrast natural.
FIRST_BN_MULTIPLIER = 10.0
# Adam betas of DeepInversion: a short momentum memory suits the jittered, ever-changing objective.
ADAM_BETAS = (0.5, 0.9)
# The image prior and its smoothness penalty are viz's: a colour-decorrelated, 1/f-scaled Fourier image
# (viz.param.FFTImage) and the squared neighbour differences (viz.objectives.squared_total_variation).
_total_variation = squared_total_variation  # a module name, so a test can poison it


class SynthesisDivergedError(DivergedError):
    """The synthesis loss or the image parameters became NaN/inf (the message names the step)."""


def _check_args(classes: Sequence[int], size: int, steps: int, lr: float, jitter: int, zoom: float,
                lowres_fraction: float, weights: dict[str, float]) -> None:
    if len(classes) == 0:
        raise ValueError("classes must name at least one target class")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 <= jitter < size // 2:
        raise ValueError(f"jitter must be in [0, size // 2), got {jitter} for size {size}")
    if not 0.0 <= zoom < 1.0:
        raise ValueError(f"zoom must be in [0, 1), got {zoom}")
    if not 0.0 <= lowres_fraction < 1.0:
        raise ValueError(f"lowres_fraction must be in [0, 1), got {lowres_fraction}")
    for name, value in weights.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not (math.isfinite(lr) and lr > 0):  # Adam would reject a NaN lr less clearly
        raise ValueError(f"lr must be a finite number > 0, got {lr}")


def _bn_divergence(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """KL(batch Gaussian || running Gaussian) of a BN input, averaged over channels."""
    # DeepInversion's plain ||mean - running_mean|| + ||var - running_var|| is dominated, in EfficientNet,
    # by the few expanded layers whose running variances reach thousands; the per-channel Gaussian KL is
    # scale-free, so every layer and channel counts alike. BN's own eps keeps dead channels finite.
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False) + bn.eps
    run_var = bn.running_var + bn.eps
    ratio = var / run_var
    return 0.5 * (ratio + (mean - bn.running_mean).square() / run_var - 1 - torch.log(ratio)).mean()


class _BNStatistics:
    """Forward hooks on every BatchNorm2d that measure how far the batch statistics of its input are from
    the running statistics; taken off again by `remove()`."""

    def __init__(self, model: nn.Module):
        self.losses: list[Tensor] = []
        self.active = False  # only the synthesis forward passes count, not a callback's own teacher calls
        # timm's BatchNormAct2d subclasses BatchNorm2d, so this finds every BN of the EfficientNets too.
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]
        if not self.layers:
            raise ValueError("the teacher has no BatchNorm2d layers with running statistics to match")
        self.first = self.layers[0]  # the first registered BN: the stem's, in timm and torchvision models
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not self.active:
            return
        loss = _bn_divergence(inputs[0], module)
        self.losses.append(loss * FIRST_BN_MULTIPLIER if module is self.first else loss)

    def collect(self) -> Tensor:
        """Sum of the divergences recorded since the last call (and clear them)."""
        if not self.losses:
            raise RuntimeError("no BatchNorm2d layer ran in the teacher's forward pass")
        total = torch.stack(self.losses).sum()
        self.losses = []
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "_BNStatistics":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _augment(x: Tensor, jitter: int, zoom: float, out_size: int, g: torch.Generator) -> Tensor:
    """Random shift, flip and zoomed crop of the whole batch, resized to out_size: what the teacher sees."""
    # DeepInversion's circular shift and flip stop the optimiser from fitting one exact pixel grid.
    if jitter > 0:
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if bool(torch.rand((), generator=g) < 0.5):
        x = torch.flip(x, dims=(3,))
    # A random crop of (1 - zoom)..1 of the side, resized: without it the images only work at their own
    # scale (resized to the teacher's 224 px most lost their class); with it they survive the resizes and
    # crops that a student's data pipeline applies.
    side = x.shape[-1]
    if zoom > 0:
        crop = max(8, round(side * (1 - zoom * float(torch.rand((), generator=g)))))
        top, left = (int(v) for v in torch.randint(0, side - crop + 1, (2,), generator=g))
        x = x[..., top:top + crop, left:left + crop]
    if x.shape[-1] != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False,
                          antialias=out_size < x.shape[-1])
    return x


def _losses(teacher: nn.Module, bn: _BNStatistics, view: Tensor, x: Tensor, targets: Tensor
            ) -> tuple[Tensor, dict[str, Tensor]]:
    """The teacher's logits on the view and the loss terms: cross-entropy, BN statistics, TV and L2 of x."""
    bn.active = True
    try:
        logits = teacher(view)
    finally:
        bn.active = False
    return logits, {"ce": F.cross_entropy(logits, targets), "bn": bn.collect(), "tv": _total_variation(x),
                    "l2": x.square().mean()}


def _cosine_lr(base: float, step: int, steps: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def synthesize(
    teacher: nn.Module,
    classes: list[int],
    size: int = 160,
    steps: int = 200,
    seed: int = 0,
    lr: float = 0.1,
    bn_weight: float = 1.0,
    tv_weight: float = 8.0,
    l2_weight: float = 1e-3,
    jitter: int | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
    *,
    zoom: float = 0.3,
    lowres_fraction: float = 0.5,
    mean: Sequence[float] = EFFICIENTNET_LITE_MEAN,
    std: Sequence[float] = EFFICIENTNET_LITE_STD,
    history: list[dict[str, float]] | None = None,
) -> Tensor:
    """Images [len(classes), 3, size, size] in [0, 1] that the frozen `teacher` classifies as `classes`.

    `jitter` bounds the random shifts in pixels (default size // 8). `callback(step, images)` is called about
    every 10% of the steps and after the last; `history`, when given, gets one dict per step (loss terms,
    accuracy on the augmented view, lr).
    """
    # The loss weights are tuned for EfficientNet-Lite0 at 160 px (16 classes, 200 steps: 100% teacher top-1):
    # bn_weight for the per-channel KL of `_bn_divergence` (natural photos score about 3-5 in total), tv_weight
    # for the mean squared neighbour differences. l2 is kept weak because the sigmoid already bounds the pixels.
    weights = {"bn_weight": bn_weight, "tv_weight": tv_weight, "l2_weight": l2_weight}
    if jitter is None:
        jitter = size // 8  # 20 px at 160: about the share of the side DeepInversion shifts by (30 px at 224)
    _check_args(classes, size, steps, lr, jitter, zoom, lowres_fraction, weights)
    params = list(teacher.parameters())
    device = params[0].device if params else torch.device("cpu")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    targets = torch.tensor(list(classes), dtype=torch.long, device=device)

    g = torch.Generator().manual_seed(int(seed))  # drives the initial spectrum and every augmentation
    image = FFTImage(len(classes), size, decorrelate=True, generator=g).to(device)
    optimizer = torch.optim.Adam([image.spectrum], lr=lr, betas=ADAM_BETAS, eps=1e-8)
    # Half resolution first: 4x cheaper steps that settle the large structures (layout, colour regions);
    # full resolution afterwards adds texture and detail (DeepInversion's multi-resolution schedule).
    lowres_steps = int(round(steps * lowres_fraction))
    report_every = max(1, steps // 10)

    # The running statistics are the target and must not move, dropout is off, and only the image gets gradients.
    with _BNStatistics(teacher) as bn, frozen(teacher, grads=False):
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(lr, step, steps)
            lowres = step < lowres_steps
            x = (image() - mean_t) / std_t  # the teacher's normalised input space
            # Half the shift while at half resolution (as DeepInversion does): over two seeds the images then
            # kept more of their class when upsampled to 224 px (target probability 0.80 vs 0.74).
            view = _augment(x, jitter // 2 if lowres else jitter, zoom, size // 2 if lowres else size, g)
            logits, terms = _losses(teacher, bn, view, x, targets)
            loss = terms["ce"] + bn_weight * terms["bn"] + tv_weight * terms["tv"] + l2_weight * terms["l2"]
            if not torch.isfinite(loss):
                raise SynthesisDivergedError(
                    f"synthesis diverged at step {step} of {steps}: loss {loss.item()} (cross-entropy "
                    f"{terms['ce'].item()}, bn {terms['bn'].item()}, tv {terms['tv'].item()}, l2 "
                    f"{terms['l2'].item()}); lower lr (now {lr}) or the prior weights")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not torch.isfinite(image.spectrum).all():
                raise SynthesisDivergedError(f"synthesis diverged at step {step} of {steps}: the image "
                                             f"parameters became NaN/inf after the optimiser step (lr {lr})")
            if history is not None:
                acc = (logits.detach().argmax(1) == targets).float().mean()
                history.append({"step": step, "loss": loss.item(), "bn": terms["bn"].item(),
                                "ce": terms["ce"].item(), "tv": terms["tv"].item(), "l2": terms["l2"].item(),
                                "acc": acc.item(), "lr": optimizer.param_groups[0]["lr"]})
            if callback is not None and (step % report_every == report_every - 1 or step == steps - 1):
                with torch.no_grad():
                    callback(step, image().cpu())
    with torch.no_grad():
        return image().cpu()


# ----------------------------------------------------------------------------- procedural images

def _image_generator(seed: int, index: int) -> torch.Generator:
    # One generator per image: image i does not depend on how many images are drawn alongside it.
    return torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + int(index) * 0x85EBCA77 + 1) % (2 ** 63))


def _rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=g) if shape else torch.rand((), generator=g)


def _grid(size: int) -> tuple[Tensor, Tensor]:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return yy, xx


def _colours(g: torch.Generator, n: int) -> Tensor:
    """n random RGB colours [n, 3, 1, 1]; stretched past [0, 1] and clipped so that saturated ones occur often."""
    c = _rand(g, n, 3)
    return (c * 1.2 - 0.1).clamp(0, 1).view(n, 3, 1, 1)


def _mix(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return a * (1 - t) + b * t


def _gradient(g: torch.Generator, size: int) -> Tensor:
    yy, xx = _grid(size)
    c = _colours(g, 3)
    if bool(_rand(g) < 0.5):  # linear, with a random direction
        angle = float(_rand(g)) * 2 * math.pi
        t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) + 0.5
    else:  # radial, from a random centre
        cx, cy = (float(v) for v in _rand(g, 2))
        t = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() / 1.2
    t = t.clamp(0, 1)
    return torch.where(t < 0.5, _mix(c[0], c[1], t * 2), _mix(c[1], c[2], t * 2 - 1))


def _stripes(g: torch.Generator, size: int) -> Tensor:
    yy, xx = _grid(size)
    c = _colours(g, 2)
    angle = float(_rand(g)) * math.pi
    freq = 2 + float(_rand(g)) * 14
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * freq * 2 * math.pi
    wave = torch.sin(phase + float(_rand(g)) * 6.28)
    sharp = 1 + float(_rand(g)) * 20  # soft sine bands through to hard-edged stripes
    t = torch.sigmoid(wave * sharp)
    return _mix(c[0], c[1], t)


def _checks(g: torch.Generator, size: int) -> Tensor:
    yy, xx = _grid(size)
    c = _colours(g, 2)
    n = 2 + int(_rand(g) * 10)
    angle = float(_rand(g) - 0.5) * math.pi / 2
    u = xx * math.cos(angle) - yy * math.sin(angle)
    v = xx * math.sin(angle) + yy * math.cos(angle)
    t = ((torch.floor(u * n) + torch.floor(v * n)) % 2).float()
    return _mix(c[0], c[1], t)


def _blobs(g: torch.Generator, size: int) -> Tensor:
    yy, xx = _grid(size)
    img = _colours(g, 1)[0].expand(3, size, size).clone()
    k = 3 + int(_rand(g) * 8)
    cols = _colours(g, k)
    centres, radii = _rand(g, k, 2), 0.05 + _rand(g, k) * 0.25
    for i in range(k):
        d2 = (xx - centres[i, 0]) ** 2 + (yy - centres[i, 1]) ** 2
        w = torch.exp(-d2 / (2 * radii[i] ** 2))
        img = _mix(img, cols[i, :, 0, 0].view(3, 1, 1), w)
    return img


def _noise(g: torch.Generator, size: int) -> Tensor:
    """Multi-octave value noise, coloured through a random three-colour map."""
    total = torch.zeros(1, 1, size, size)
    amp, weight = 1.0, 0.0
    persistence = 0.35 + float(_rand(g)) * 0.4
    base = 2 + int(_rand(g) * 6)
    for octave in range(5):
        cells = min(size, base * 2 ** octave)
        field = torch.rand(1, 1, cells, cells, generator=g)
        total += amp * F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
        weight += amp
        amp *= persistence
    t = (total[0] / weight)
    t = ((t - t.min()) / (t.max() - t.min() + 1e-8)).clamp(0, 1)
    c = _colours(g, 3)
    return torch.where(t < 0.5, _mix(c[0], c[1], t * 2), _mix(c[1], c[2], t * 2 - 1))


def _shapes(g: torch.Generator, size: int) -> Tensor:
    yy, xx = _grid(size)
    img = _gradient(g, size) * 0.5 + _colours(g, 1)[0] * 0.5  # a soft background
    k = 1 + int(_rand(g) * 6)
    for _ in range(k):
        col = _colours(g, 1)[0]
        kind = int(_rand(g) * 3)
        cx, cy = (float(v) for v in _rand(g, 2))
        r = 0.08 + float(_rand(g)) * 0.25
        if kind == 0:  # disc
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        elif kind == 1:  # rotated rectangle
            a = float(_rand(g)) * math.pi
            u = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
            v = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
            mask = (u.abs() < r) & (v.abs() < r * (0.3 + float(_rand(g))))
        else:  # triangle: inside three half-planes
            a0 = float(_rand(g)) * 2 * math.pi
            mask = torch.ones_like(xx, dtype=torch.bool)
            for j in range(3):
                a = a0 + j * 2 * math.pi / 3
                mask &= (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a) < r * 0.5
        img = torch.where(mask, col, img)
    return img


_KINDS = (_gradient, _stripes, _checks, _blobs, _noise, _shapes)


def procedural_images(n: int, size: int, seed: int) -> Tensor:
    """[n, 3, size, size] in [0, 1]: gradients, stripes, checks, blobs, noise textures and shapes, fixed by `seed`."""
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    out = torch.empty(n, 3, size, size)
    offset = int(seed) % len(_KINDS)
    for i in range(n):
        g = _image_generator(seed, i)
        kind = _KINDS[(i + offset) % len(_KINDS)]  # cycle the kinds so that even a few images vary in kind
        img = kind(g, size)
        if bool(_rand(g) < 0.3):  # a little pixel noise on some, as texture
            img = img + (torch.rand(3, size, size, generator=g) - 0.5) * 0.15
        out[i] = img.clamp(0, 1)
    return out
