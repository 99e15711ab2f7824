"""Text-to-image by VQGAN inversion (the BriVL paper's Fig. 3): optimise VQGAN tokens so that the decoded image
matches a text in a frozen TwoTower model's joint space.

As the paper describes: sample a random token sequence, decode it with the frozen VQGAN, embed the image with
the frozen image tower and the text with the text tower, and back-propagate the matching loss into the tokens.
Two token parameterisations:
- "z": continuous latents snapped to their nearest codes with a straight-through gradient, the decoded image
  clamped with a gradient that still pulls outside pixels back in, z kept inside the codebook's range;
- "logits": a distribution over codes per cell, sampled with a straight-through (hard) Gumbel-softmax.
Each step embeds random cutouts of the image (their count and the cut power set how many and how small) after
kornia augmentations, and minimises the spherical distance to each prompt times its weight (negative weights
push away). Talks to the model only through `encode_text` and `encode_image`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brivl.errors import UserInputError
from brivl.frozen import frozen
from brivl.progress import shown
from brivl.images import load_image
from brivl.twotower import TwoTower

from . import objectives as O
from . import transforms as T
from .objectives import spherical_distance  # noqa: F401 - VQGAN inversion's distance, at home in objectives
from .render_loop import _device, render
from .vqgan import VQGAN

ProgressCallback = Callable[[int, Tensor], None]
PromptSpec = str | Sequence[str | tuple[str, float]] | Mapping[str, float]
TokenParam = Literal["z", "logits"]


class VQGANRender(NamedTuple):
    """Final images [n,3,H,W] in [0,1], the weighted text cosine per step and row [steps, n], the codes [n,h,w]."""

    images: Tensor
    history: Tensor
    indices: Tensor


# --- prompts --------------------------------------------------------------------------------------------------

def parse_prompt(text: str) -> tuple[str, float]:
    """'a red apple:2' -> ('a red apple', 2.0); a text without a numeric ':weight' suffix weighs 1."""
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            return head.strip(), float(tail)
        except ValueError:
            pass
    return text.strip(), 1.0


def prompts(text: PromptSpec, negative: str | Sequence[str | tuple[str, float]] = ()) -> list[tuple[str, float]]:
    """(text, weight) pairs: the texts (weights from ':w' suffixes, tuples or a mapping), negatives weighed < 0."""
    def pairs(spec) -> list[tuple[str, float]]:
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, Mapping):
            return [(str(t), float(w)) for t, w in spec.items()]
        return [(str(s[0]), float(s[1])) if isinstance(s, tuple) else parse_prompt(s) for s in spec]

    out = pairs(text)
    out += [(t, -abs(w)) for t, w in pairs(negative)]
    for t, w in out:
        if not t.strip():
            raise UserInputError("a prompt is empty; give it some words")
        if not math.isfinite(w):
            raise UserInputError(f"prompt {t!r} has a weight that is not a finite number: {w}")
    if not any(w > 0 for _, w in out):
        raise UserInputError("give at least one prompt with a positive weight")
    return out


# --- cutouts and augmentations --------------------------------------------------------------------------------

class MakeCutouts(nn.Module):
    """`cutn` random square cutouts per image, sides drawn as rand**cut_pow between cut_size and the image side,
    resized to cut_size, then kornia augmentations (flip, sharpness, affine, perspective, colour jitter)."""

    def __init__(self, cut_size: int, cutn: int = 16, cut_pow: float = 1.0, augment: bool = True):
        super().__init__()
        if cutn < 1 or cut_size < 8 or not cut_pow > 0:
            raise UserInputError(f"cutouts need cutn >= 1, cut_size >= 8 and cut_pow > 0; got {cutn}, {cut_size}, "
                             f"{cut_pow}")
        self.cut_size, self.cutn, self.cut_pow = cut_size, cutn, cut_pow
        self.augs = None
        if augment:
            import kornia.augmentation as K  # deferred: a heavy optional dependency

            self.augs = nn.Sequential(
                K.RandomHorizontalFlip(p=0.5),
                K.RandomSharpness(0.3, p=0.4),
                K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"),
                K.RandomPerspective(0.2, p=0.4),
                K.ColorJitter(hue=0.01, saturation=0.01, p=0.7))

    def forward(self, x: Tensor, g: torch.Generator) -> Tensor:
        """[n*cutn, 3, cut_size, cut_size]: cutout k of image i at row k*n + i (sizes and places from g)."""
        h, w = x.shape[-2:]
        hi, lo = min(h, w), min(h, w, self.cut_size)
        cuts = []
        for _ in range(self.cutn):
            size = int(float(torch.rand((), generator=g)) ** self.cut_pow * (hi - lo) + lo)
            top = int(torch.randint(0, h - size + 1, (), generator=g))
            left = int(torch.randint(0, w - size + 1, (), generator=g))
            cut = x[..., top:top + size, left:left + size]
            cuts.append(F.interpolate(cut, size=(self.cut_size,) * 2, mode="bilinear", align_corners=False,
                                      antialias=size > self.cut_size) if size != self.cut_size else cut)
        batch = torch.cat(cuts)
        return batch if self.augs is None else self.augs(batch).clamp(0, 1)


# --- token parameterisations ----------------------------------------------------------------------------------

class LatentTokens(nn.Module):
    """Continuous latents z; images decode from their nearest codes with a straight-through gradient."""

    def __init__(self, vqgan: VQGAN, z: Tensor):
        super().__init__()
        self.vqgan = [vqgan]  # a list: the frozen VQGAN is not a sub-module whose weights an optimiser would see
        self.z = nn.Parameter(z.clone())
        book = vqgan.codebook.detach()
        self.register_buffer("z_min", book.min(0).values.view(1, -1, 1, 1))
        self.register_buffer("z_max", book.max(0).values.view(1, -1, 1, 1))

    def forward(self, g: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(images in [0,1], code indices)."""
        zq, idx = self.vqgan[0].quantize_st(self.z)
        return self.vqgan[0].decode(zq), idx

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep z inside the codebook's per-channel range (VQGAN+CLIP): far-off z would snap to edge codes only."""
        self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))


class LogitTokens(nn.Module):
    """Code logits per cell; images decode from a hard Gumbel-softmax sample with a straight-through gradient."""

    def __init__(self, vqgan: VQGAN, logits: Tensor, tau: float = 1.0):
        super().__init__()
        self.vqgan, self.tau = [vqgan], tau
        self.logits = nn.Parameter(logits.clone())  # [n, h, w, K]

    def forward(self, g: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(images in [0,1], code indices); with g, Gumbel noise from g, else the argmax (the final image)."""
        logits = self.logits
        if g is not None:
            u = torch.rand(logits.shape, generator=g).to(logits).clamp(1e-9, 1 - 1e-9)
            logits = logits - (-u.log()).log()  # + Gumbel noise
        soft = (logits / self.tau).softmax(-1)
        idx = soft.argmax(-1)
        hard = F.one_hot(idx, soft.shape[-1]).to(soft)
        onehot = hard + soft - soft.detach()  # straight-through: the hard code forward, the soft gradient back
        zq = (onehot @ self.vqgan[0].codebook).permute(0, 3, 1, 2)
        return self.vqgan[0].decode(zq), idx

    def after_step(self) -> None:
        """Nothing to constrain."""


def _grid(vqgan: VQGAN, size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    f = vqgan.factor
    if h < f or w < f:
        raise UserInputError(f"size {h}x{w} is smaller than one VQGAN cell ({f} px)")
    return h // f, w // f  # sides that are not multiples of the factor are rounded down


def _init_image(init: Tensor | str | Path, n: int, hw: tuple[int, int], factor: int, device) -> Tensor:
    if isinstance(init, (str, Path)):
        init = load_image(init)
    if init.dim() == 3:
        init = init[None]
    if init.dim() != 4 or init.shape[1] != 3:
        raise UserInputError(f"init image must be [3, H, W] or [n, 3, H, W], got {tuple(init.shape)}")
    init = F.interpolate(init.float().to(device), size=(hw[0] * factor, hw[1] * factor), mode="bilinear",
                         antialias=True, align_corners=False).clamp(0, 1)
    return init.expand(n, -1, -1, -1) if init.shape[0] == 1 else init


def tokens(vqgan: VQGAN, n: int, size: int | tuple[int, int], param: TokenParam = "z", seed: int = 0,
           init: Tensor | str | Path | None = None, tau: float = 1.0) -> LatentTokens | LogitTokens:
    """The trainable tokens: random codes (seeded), or the encoding of an init image."""
    if param not in ("z", "logits"):
        raise UserInputError(f"param must be 'z' or 'logits', got {param!r}")
    h, w = _grid(vqgan, size)
    book = vqgan.codebook.detach()
    device = book.device
    with torch.no_grad():
        if init is not None:
            z = vqgan.encode(_init_image(init, n, (h, w), vqgan.factor, device))
            if init is not None and z.shape[0] != n:
                raise UserInputError(f"init holds {z.shape[0]} images but the batch has {n}")
        else:
            g = torch.Generator().manual_seed(seed)
            idx = torch.randint(0, book.shape[0], (n, h, w), generator=g).to(device)
            z = book[idx].permute(0, 3, 1, 2)
    if param == "z":
        return LatentTokens(vqgan, z)
    flat = z.permute(0, 2, 3, 1)
    logits = -torch.cdist(flat.reshape(n, -1, flat.shape[-1]), book[None].expand(n, -1, -1))  # nearer code: larger
    logits = logits.reshape(n, h, w, -1)
    logits = (logits - logits.amax(-1, keepdim=True)) / logits.std().clamp(min=1e-6) * 3
    return LogitTokens(vqgan, logits, tau)


# --- the loop -------------------------------------------------------------------------------------------------

def vqgan_imagine(
    model: TwoTower,
    vqgan: VQGAN,
    text: PromptSpec,
    *,
    negative: str | Sequence[str | tuple[str, float]] = (),
    steps: int = 200,
    size: int | tuple[int, int] = 256,
    batch: int = 1,
    lr: float | None = None,
    seed: int = 0,
    param: TokenParam = "z",
    cutn: int = 16,
    cut_pow: float = 1.0,
    cut_size: int | None = None,
    augment: bool = True,
    init: Tensor | str | Path | None = None,
    tau: float = 1.0,
    callback: ProgressCallback | None = None,
    every: int | None = None,
    progress: bool | None = None,
) -> VQGANRender:
    """Images decoded by `vqgan` whose embeddings in `model` match the weighted prompts (VQGAN inversion).

    `text`: a prompt, a list ('text:weight' suffixes allowed), (text, weight) pairs or a mapping; `negative`:
    prompts to move away from. `size`: side or (H, W), rounded down to multiples of the VQGAN factor. `param`:
    "z" (straight-through quantisation) or "logits" (straight-through Gumbel-softmax at temperature `tau`).
    `cutn` cutouts per image per step, sides biased small by `cut_pow` > 1, resized to `cut_size` (default: the
    model's input side). `init`: an image (tensor or file) to start from instead of random tokens. `callback(step,
    images)` gets the images at step 0, every `every` steps and at the end. Both models stay frozen.
    """
    if steps < 1:
        raise UserInputError(f"steps must be >= 1, got {steps}")
    if batch < 1:
        raise UserInputError(f"batch must be >= 1, got {batch}")
    lr = (0.1 if param == "z" else 0.5) if lr is None else lr
    if not lr > 0:
        raise UserInputError(f"lr must be > 0, got {lr}")
    every = max(1, steps // 10) if every is None else every
    if every < 1:
        raise UserInputError(f"every must be >= 1, got {every}")
    pairs = prompts(text, negative)
    device = _device(model)
    vqgan = vqgan.to(device).eval().requires_grad_(False)
    progress = shown(progress)  # brivl.progress: None shows a bar on a terminal only, True in a log too
    devices = [device.index or 0] if device.type == "cuda" else []
    with frozen(model), torch.random.fork_rng(devices=devices):  # kornia draws from the global RNG: seed, restore
        torch.manual_seed(seed)
        return _run(model, vqgan, pairs, steps, size, batch, lr, seed, param, cutn, cut_pow,
                    cut_size or model.image_size, augment, init, tau, callback, every, progress)


class TokenImage(nn.Module):
    """VQGAN tokens as an image parameterisation of viz.render: a call decodes them (the argmax codes for logits),
    sample(g) draws the step's Gumbel noise from the render's generator, after_step keeps z in the codebook's
    range. The codes of the last call are in `indices`."""

    def __init__(self, toks: LatentTokens | LogitTokens, n: int, hw: tuple[int, int], factor: int):
        super().__init__()
        self.toks = toks
        self.n, self.height, self.width = n, hw[0] * factor, hw[1] * factor
        self.indices: Tensor | None = None

    def forward(self, g: torch.Generator | None = None) -> Tensor:
        images, self.indices = self.toks(g)
        return images

    def sample(self, generator: torch.Generator) -> Tensor:
        return self(generator if isinstance(self.toks, LogitTokens) else None)

    def after_step(self) -> None:
        self.toks.after_step()


def _run(model: TwoTower, vqgan: VQGAN, pairs: list[tuple[str, float]], steps: int, size, n: int, lr: float,
         seed: int, param: TokenParam, cutn: int, cut_pow: float, cut_size: int, augment: bool, init, tau: float,
         callback: ProgressCallback | None, every: int, progress: bool) -> VQGANRender:
    """The one render loop (viz.render) on VQGAN tokens, cutouts as its transform, spherical distance as objective."""
    with torch.no_grad():
        targets = model.encode_text([t for t, _ in pairs]).detach()  # [P, d]
    weights = torch.tensor([w for _, w in pairs], device=targets.device, dtype=targets.dtype)
    image = TokenImage(tokens(vqgan, n, size, param, seed, init, tau), n, _grid(vqgan, size), vqgan.factor)
    cosines: list[Tensor] = []  # the weighted text cosine of every step: what VQGANRender.history reports
    objective = O.spherical_match(targets, weights, record=cosines)
    objective.name = pairs[0][0]
    result = render(model, objective, steps=steps, lr=lr, seed=seed, init=image, callback=callback, every=every,
                    progress=progress, transforms=T.Compose([MakeCutouts(cut_size, cutn, cut_pow, augment)]),
                    redirect_relu=False)
    return VQGANRender(result.images, torch.stack(cosines), image.indices.detach())
