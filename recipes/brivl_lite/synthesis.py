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

from torch.optim.lr_scheduler import LambdaLR

from brivl.errors import DivergedError, UserInputError
from brivl.lite.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from brivl.viz import transforms as T
from brivl.viz.objectives import Context, Objective, batchnorm_layers, batchnorm_statistics, squared_total_variation
from brivl.viz.param import FFTImage
from brivl.viz.render_loop import RenderDivergedError, render

# DeepInversion weights the first BN layer's statistics 10x: it sees nearly raw pixels, and matching its
# statistics is what keeps colours and contrast natural.
FIRST_BN_MULTIPLIER = 10.0
# Adam betas of DeepInversion: a short momentum memory suits the jittered, ever-changing objective.
ADAM_BETAS = (0.5, 0.9)
# The loop, the image prior and the BN-statistics term are viz's: viz.render on a colour-decorrelated, 1/f-scaled
# Fourier image (viz.param.FFTImage), viz.objectives.batchnorm_statistics, and the squared neighbour differences
# (viz.objectives.squared_total_variation). What is DeepInversion's own here: the classifier's cross-entropy, the
# weights, the augmentations and their two-resolution schedule, Adam's betas and the cosine learning rate.
_total_variation = squared_total_variation  # a module name, so a test can poison it


class SynthesisDivergedError(DivergedError):
    """The synthesis loss or the image parameters became NaN/inf (the message names the step)."""


def _check_args(classes: Sequence[int], size: int, steps: int, lr: float, jitter: int, zoom: float,
                lowres_fraction: float, weights: dict[str, float]) -> None:
    if len(classes) == 0:
        raise UserInputError("classes must name at least one target class")
    if size < 32:
        raise UserInputError(f"size must be at least 32 pixels, got {size}")
    if steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps}")
    if not 0 <= jitter < size // 2:
        raise UserInputError(f"jitter must be in [0, size // 2), got {jitter} for size {size}")
    if not 0.0 <= zoom < 1.0:
        raise UserInputError(f"zoom must be in [0, 1), got {zoom}")
    if not 0.0 <= lowres_fraction < 1.0:
        raise UserInputError(f"lowres_fraction must be in [0, 1), got {lowres_fraction}")
    for name, value in weights.items():
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"{name} must be a finite number >= 0, got {value}")
    if not (math.isfinite(lr) and lr > 0):  # Adam would reject a NaN lr less clearly
        raise UserInputError(f"lr must be a finite number > 0, got {lr}")


class _Teacher(nn.Module):
    """A classifier seen through the render loop's TwoTower door: encode_image gives its logits."""

    def __init__(self, classifier: nn.Module, mean: Sequence[float], std: Sequence[float], size: int):
        super().__init__()
        self.classifier = classifier
        self.image_size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalise(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels in the classifier's input space."""
        return (pixels - self.mean) / self.std

    def encode_image(self, pixels: Tensor) -> Tensor:
        """The classifier's logits [n, classes] for [0, 1] pixels."""
        return self.classifier(self.normalise(pixels))

    def feature_layers(self) -> dict[str, nn.Module]:
        """No named layers: the synthesis objective needs the logits and the BatchNorm inputs only."""
        return {}


def _augmentations(size: int, jitter: int, zoom: float, lowres_steps: int) -> T.Schedule:
    """DeepInversion's views: circular shift, flip and a zoomed crop, at half resolution for the first steps."""
    # Half resolution first: 4x cheaper steps that settle the large structures (layout, colour regions);
    # full resolution afterwards adds texture and detail (DeepInversion's multi-resolution schedule). Half the
    # shift while at half resolution (as DeepInversion does): over two seeds the images then kept more of their
    # class when upsampled to 224 px (target probability 0.80 vs 0.74). The random crop of (1 - zoom)..1 of the
    # side: without it the images only work at their own scale (resized to the teacher's 224 px most lost their
    # class); with it they survive the resizes and crops that a student's data pipeline applies.
    low = T.Compose([T.Roll(jitter // 2), T.Flip(), T.ZoomCrop(zoom), T.Resize(size // 2)])
    full = T.Compose([T.Roll(jitter), T.Flip(), T.ZoomCrop(zoom), T.Resize(size)])
    return T.Schedule(lambda step, steps: low if step < lowres_steps else full)


def _objective(teacher: _Teacher, targets: Tensor, weights: dict[str, float],
               history: list[dict[str, float]] | None) -> Objective:
    """-(cross-entropy + bn * BN statistics + tv * TV + l2 * L2): one value for the batch, logged per step."""
    bn_term = batchnorm_statistics(FIRST_BN_MULTIPLIER)

    def fn(ctx: Context) -> Tensor:
        logits = ctx.image_embeddings()
        x = teacher.normalise(ctx.images)  # the priors act in the teacher's normalised input space
        terms = {"ce": F.cross_entropy(logits, targets), "bn": bn_term(ctx)[0], "tv": _total_variation(x),
                 "l2": x.square().mean()}
        loss = (terms["ce"] + weights["bn_weight"] * terms["bn"] + weights["tv_weight"] * terms["tv"]
                + weights["l2_weight"] * terms["l2"])
        if history is not None:
            acc = (logits.detach().argmax(1) == targets).float().mean()
            history.append({"step": len(history), "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                            "acc": acc.item()})
        # One value for the whole batch; the loop sums it over the rows, n times the loss: Adam does not mind.
        return -loss
    return Objective(fn, "DeepInversion", rows=len(targets), hooks=bn_term.hooks)


def _every_tenth(callback: Callable[[int, Tensor], None] | None, steps: int
                 ) -> tuple[Callable[[int, Tensor], None] | None, int]:
    """The render loop's callback (images after `k` updates, k = 0, every, ..., steps) as this module's
    (step index after whose update, images), skipping the untouched start."""
    report_every = max(1, steps // 10)
    if callback is None:
        return None, report_every

    def relay(updates: int, images: Tensor) -> None:
        if updates > 0 and (updates % report_every == 0 or updates == steps):
            callback(updates - 1, images.cpu())
    return relay, report_every


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
    # bn_weight for the per-channel KL of viz.objectives.batchnorm_divergence (natural photos score about 3-5 in
    # total), tv_weight for the mean squared neighbour differences. l2 is kept weak because the sigmoid already
    # bounds the pixels.
    weights = {"bn_weight": bn_weight, "tv_weight": tv_weight, "l2_weight": l2_weight}
    if jitter is None:
        jitter = size // 8  # 20 px at 160: about the share of the side DeepInversion shifts by (30 px at 224)
    _check_args(classes, size, steps, lr, jitter, zoom, lowres_fraction, weights)
    batchnorm_layers(teacher)  # refuse a teacher without BatchNorm before any work
    params = list(teacher.parameters())
    device = params[0].device if params else torch.device("cpu")
    # In the teacher's own mode, so that the loop's frozen() puts it back the way it was.
    tower = _Teacher(teacher, mean, std, size).to(device).train(teacher.training)
    targets = torch.tensor(list(classes), dtype=torch.long, device=device)
    g = torch.Generator().manual_seed(int(seed))  # the initial spectrum; the loop seeds the augmentations
    image = FFTImage(len(classes), size, decorrelate=True, generator=g).to(device)
    relay, every = _every_tenth(callback, steps)
    try:
        result = render(tower, _objective(tower, targets, weights, history), steps=steps, lr=lr, seed=int(seed),
                        init=image, transforms=_augmentations(size, jitter, zoom, int(round(steps * lowres_fraction))),
                        callback=relay, every=every, progress=False, redirect_relu=False,
                        optimizer=lambda p: torch.optim.Adam(p, lr=lr, betas=ADAM_BETAS, eps=1e-8),
                        scheduler=lambda opt: LambdaLR(opt, lambda step: _cosine(step, steps)))
    except RenderDivergedError as e:
        raise SynthesisDivergedError(f"synthesis diverged at step {e.step} of {steps} (lr {lr}): {e}") from e
    for h in history or []:
        h["lr"] = lr * _cosine(h["step"], steps)
    return result.images.cpu()


def _cosine(step: int, steps: int) -> float:
    """The learning rate's factor at a step: a cosine from 1 down to 0 over the synthesis."""
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))


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
