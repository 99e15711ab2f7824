"""Neuron exploration: how strongly real images drive a channel of a feature layer (e.g. LLP-108), and which
images of a folder drive it most. Complements `viz.neuron`, which renders what maximises the channel.

Activations are read with a forward hook on `model.feature_layers()[layer]` during `encode_image`, averaged over
the spatial positions (or tokens), so one number per image and channel. `amplify` renders a channel starting from
real images (a channel behind a ReLU is silent on the grey start of `viz.neuron` unless a text moves the image).
Only the TwoTower protocol is used.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from brivl.data import IMAGE_SUFFIXES
from brivl.errors import UnknownNameError, UserInputError
from brivl.images import load_images
from brivl.twotower import TwoTower

from . import objectives as O
from .param import PixelImage
from .render_loop import Render, _device, render


def image_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under folder (any depth, sorted); ValueError if the folder is missing or holds none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserInputError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise UserInputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files[:limit] if limit else files


@torch.no_grad()
def channel_activations(model: TwoTower, layer: str, pixels: Tensor) -> Tensor:
    """Mean activation of every channel of `layer` for each image [n, C] (pixels [n,3,H,W] in [0, 1])."""
    layers = model.feature_layers()
    if layer not in layers:
        raise UnknownNameError(f"layer {layer!r} is not one of the model's feature layers ({', '.join(layers)})")
    out: list[Tensor] = []

    def keep(module, inputs, output) -> None:
        out.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = layers[layer].register_forward_hook(keep)
    try:
        model.encode_image(pixels.to(_device(model)))
    finally:
        handle.remove()
    if not out:
        raise RuntimeError(f"layer {layer!r} did not run in encode_image")
    act = out[-1].float()
    if act.dim() == 4:  # [n, C, H, W]
        return act.mean(dim=(2, 3)).cpu()
    if act.dim() == 3:  # [n, L, C] tokens keep channels last
        return act.mean(dim=1).cpu()
    return act.reshape(act.shape[0], -1).cpu()


@dataclass
class TopImages:
    """The images of a folder ranked by one channel's mean activation (best first) and every image's score."""

    layer: str
    channel: int
    paths: list[Path]
    scores: list[float]
    all_paths: list[Path]
    all_scores: Tensor


def top_activating(model: TwoTower, layer: str, channel: int, images: str | Path | Sequence[str | Path], k: int = 8,
                   batch_size: int = 16, limit: int | None = 500,
                   callback: Callable[[int, int], None] | None = None) -> TopImages:
    """The k images (a folder, or a list of files) that drive channel `channel` of `layer` hardest, best first.

    Images are read at the model's input size; `limit` caps how many files of a folder are scored.
    `callback(done, total)` is told after each batch how many images are scored.
    """
    paths = image_files(images, limit) if isinstance(images, (str, Path)) else [Path(p) for p in images]
    if not paths:
        raise UserInputError("no images given")
    scores = []
    for start in range(0, len(paths), batch_size):
        pixels = load_images(paths[start:start + batch_size], model.image_size)
        acts = channel_activations(model, layer, pixels)
        if not 0 <= channel < acts.shape[1]:
            raise UserInputError(f"channel {channel} out of range: layer {layer!r} has {acts.shape[1]} channels "
                             f"(0-{acts.shape[1] - 1})")
        scores.append(acts[:, channel])
        if callback is not None:
            callback(min(start + batch_size, len(paths)), len(paths))
    all_scores = torch.cat(scores)
    order = torch.argsort(all_scores, descending=True, stable=True)[:k].tolist()
    return TopImages(layer, channel, [paths[i] for i in order], [float(all_scores[i]) for i in order], paths,
                     all_scores)


def strongest_channels(model: TwoTower, layer: str, pixels: Tensor, k: int = 8) -> list[tuple[int, float]]:
    """The k channels of `layer` with the highest mean activation over a batch of images: (channel, value)."""
    mean = channel_activations(model, layer, pixels).mean(0)
    values, idx = mean.topk(min(k, mean.numel()))
    return list(zip(idx.tolist(), values.tolist()))


def image_param(pixels: Tensor, eps: float = 1e-3) -> PixelImage:
    """A learnable image that starts at the given pixels [n,3,H,W] in [0, 1] (plain RGB, no colour decorrelation)."""
    param = PixelImage(pixels.shape[0], tuple(pixels.shape[-2:]), decorrelate=False)
    with torch.no_grad():
        param.pixels.copy_(torch.logit(pixels.detach().float().cpu().clamp(eps, 1 - eps)))
    return param


def amplify(model: TwoTower, layer: str, channel: int, pixels: Tensor, *, text: str | None = None,
            text_weight: float = 1.0, steps: int = 64, lr: float = 0.05, seed: int = 0, callback=None,
            every: int | None = None, progress: bool | None = None) -> Render:
    """Neuron visualisation that starts from real images instead of grey noise, e.g. the channel's top-activating
    image: what the channel sees in them, exaggerated. Useful for channels behind a ReLU (EfficientNet's LLP), which
    are silent on a grey start, so maximising them alone from noise has no gradient to follow."""
    objective = O.channel(layer, channel)
    if text is not None:
        objective = objective + text_weight * O.text_match(text)
    init = image_param(pixels).to(_device(model))
    return render(model, objective, steps=steps, lr=lr, seed=seed, init=init, callback=callback, every=every,
                  progress=progress)
