"""Attribution: which parts of an image match a text, from the model's patches and from pixel gradients.

`patch_similarity` scores each patch embedding (BriVL: the 37 MSPP patches, a 6x6 grid plus the whole image)
against a text; `patch_heatmap` paints those scores back onto the image plane. `saliency` is the gradient of
the image-text cosine with respect to the pixels (Simonyan et al. 2014; SmoothGrad when `smooth` > 0).
`overlay` and `plot` draw a heatmap over the image with a matplotlib colour map.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.errors import NotSupportedError, UserInputError
from brivl.twotower import HasPatches, TwoTower

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Target = str | Sequence[str] | Tensor


def _targets(model: TwoTower, target: Target, n: int) -> Tensor:
    """Unit target vectors [1 or n, d] from text(s) or embedding(s)."""
    if isinstance(target, Tensor):
        vecs = target.detach().reshape(-1, target.shape[-1]).float()
    else:
        texts = [target] if isinstance(target, str) else list(target)
        with torch.no_grad():
            vecs = model.encode_text(texts)
    if vecs.shape[0] not in (1, n):
        raise UserInputError(f"{vecs.shape[0]} targets for {n} images; give 1 or {n}")
    return F.normalize(vecs, dim=-1)


def patch_similarity(model: TwoTower, pixels: Tensor, target: Target) -> Tensor:
    """Cosine of each patch embedding to the target [n, P] (P = 37 for BriVL: 36 grid cells, then the whole image)."""
    if not isinstance(model, HasPatches):
        raise NotSupportedError(f"{type(model).__name__} has no patch_embeddings(); use saliency() instead")
    with torch.no_grad():
        patches = F.normalize(model.patch_embeddings(pixels), dim=-1)  # [n, P, d]
        t = _targets(model, target, pixels.shape[0]).to(patches)
        return torch.einsum("npd,nd->np", patches, t.expand(patches.shape[0], -1))


def patch_boxes(model: TwoTower, count: int) -> Tensor:
    """The patches' boxes [P, 4] as (x0, y0, x1, y1) fractions of the image side."""
    if isinstance(model, HasPatches):
        return model.patch_boxes().float().cpu()
    # Without the model's own boxes, assume BriVL's MSPP layout: a g x g grid (outer loop over x), then the image.
    g = math.isqrt(count - 1)
    if g * g != count - 1:
        raise UserInputError(f"cannot lay out {count} patches without the model's patch_boxes()")
    cells = [[i / g, j / g, (i + 1) / g, (j + 1) / g] for i in range(g) for j in range(g)]
    return torch.tensor(cells + [[0.0, 0.0, 1.0, 1.0]])


def paint_boxes(scores: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-pixel mean score [n, H, W] of the boxes covering each pixel; boxes spanning the whole image are skipped."""
    h, w = size
    # The whole-image box covers every pixel equally, so it would only flatten the map; it is left out.
    keep = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) < 0.99
    scores, boxes = scores[:, keep], boxes[keep]
    ys = (torch.arange(h) + 0.5) / h  # pixel centres as fractions
    xs = (torch.arange(w) + 0.5) / w
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])  # [P, H]
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])  # [P, W]
    cover = (inside_y[:, :, None] & inside_x[:, None, :]).to(scores)  # [P, H, W]
    total = torch.einsum("np,phw->nhw", scores, cover.to(scores.device))
    return total / cover.sum(dim=0).clamp_min(1).to(scores.device)


def patch_heatmap(model: TwoTower, pixels: Tensor, target: Target, size: tuple[int, int] | None = None) -> Tensor:
    """Patch-to-target cosines painted onto the image plane [n, H, W] (default the pixels' own size)."""
    scores = patch_similarity(model, pixels, target)
    boxes = patch_boxes(model, scores.shape[1])
    return paint_boxes(scores.float().cpu(), boxes, size or tuple(pixels.shape[-2:]))


def saliency(model: TwoTower, pixels: Tensor, target: Target, smooth: int = 0, noise: float = 0.1,
             seed: int = 0) -> Tensor:
    """|d cosine(image, target) / d pixel|, max over colour channels [n, H, W]; SmoothGrad over `smooth` copies."""
    t = _targets(model, target, pixels.shape[0])
    g = torch.Generator().manual_seed(seed)
    copies = [pixels] if smooth <= 0 else [
        # Clamped back into [0, 1]: encode_image refuses pixels outside it.
        (pixels + noise * torch.randn(pixels.shape, generator=g).to(pixels)).clamp(0, 1) for _ in range(smooth)]
    total = torch.zeros(pixels.shape[0], *pixels.shape[-2:], device=pixels.device)
    for x in copies:
        x = x.detach().clone().requires_grad_(True)
        cos = F.cosine_similarity(model.encode_image(x), t.to(x), dim=-1)
        (grad,) = torch.autograd.grad(cos.sum(), x)  # per-row sum: each image's gradient is its own
        total += grad.abs().amax(dim=1)
    return total / len(copies)


def _normalise(heat: Tensor, clip: float = 1.0) -> Tensor:
    """Scale a map to [0, 1] from its minimum to its `clip` quantile (a constant map becomes zeros)."""
    # Gradient saliency is dominated by a few hot pixels; saturating the top 1% keeps the rest visible.
    lo, hi = heat.min(), torch.quantile(heat.flatten(), clip)
    return ((heat - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(heat)


def overlay(image: Tensor, heat: Tensor, alpha: float = 0.5, cmap: str = "inferno", clip: float = 0.99) -> Tensor:
    """The image [3, H, W] blended with a colour-mapped heatmap [h, w] (scaled to its `clip` quantile), in [0, 1]."""
    h, w = image.shape[-2:]
    heat = heat.detach().float().cpu()
    if heat.shape != (h, w):
        heat = F.interpolate(heat[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    import matplotlib  # imported here: `import viz` stays light for callers that never draw

    rgba = matplotlib.colormaps[cmap](_normalise(heat, clip).numpy())  # [H, W, 4] floats in [0, 1]
    colours = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).to(torch.float32)
    return ((1 - alpha) * image.detach().float().cpu() + alpha * colours).clamp(0, 1)


def plot(image: Tensor, heat: Tensor, ax: Axes | None = None, title: str | None = None, alpha: float = 0.5,
         cmap: str = "inferno", clip: float = 0.99) -> Axes:
    """Draw the heatmap overlay on ax (a new figure's axes if None) and return the axes."""
    if ax is None:
        # A bare Figure, not pyplot: no global state and no GUI backend needed on a headless machine.
        from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

        ax = Figure(figsize=(4, 4)).add_subplot()
    ax.imshow(overlay(image, heat, alpha, cmap, clip).permute(1, 2, 0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
