"""A transformers image processor's settings, applied to [0, 1] pixel tensors differentiably.

The CLIP family's processors resize (the shorter side to `size.shortest_edge`, or to `size.height` x `size.width`),
centre-crop to `crop_size`, rescale and normalise. `ImageSettings.apply` does the same on float tensors with
torch's antialiased interpolation (what the processors' torchvision backend runs on float input), so an image
given to `encode_image` gets the same pixel values the folder's own processor would give the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError

# PIL's resampling codes, as processors store them, to torch's interpolation modes. LANCZOS (1) has no torch
# mode; the processors' torchvision backend falls back to bicubic for it too.
_MODES = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


@dataclass(frozen=True)
class ImageSettings:
    """What a processor does to an image before the vision tower: sizes, interpolation, rescale, mean/std."""

    resize: tuple[str, int, int] | None  # ("short", side, 0) or ("exact", height, width); None: no resize
    crop: tuple[int, int] | None  # (height, width) of the centre crop; None: no crop
    interpolation: str
    scale: float  # what a [0, 1] pixel is multiplied by to become the processor's rescaled value
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_size(self) -> int:
        """The side of the square the vision tower sees (the crop, else the exact resize)."""
        if self.crop is not None:
            return int(self.crop[0])
        if self.resize is not None and self.resize[0] == "exact":
            return int(self.resize[1])
        return int(self.resize[1]) if self.resize is not None else 224

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after the resize step, computed as the processors compute it (long side truncated)."""
        if self.resize is None:
            return h, w
        kind, a, b = self.resize
        if kind == "exact":
            return a, b
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(a * long / short)
        return (new_long, a) if w <= h else (a, new_long)

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        if self.interpolation == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)

    def _normalise(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * self.scale - mean) / std

    def apply(self, pixels: Tensor) -> Tensor:
        """[n, 3, H, W] in [0, 1] -> the model's pixel_values: resized, centre-cropped, normalised; differentiable."""
        x = self._resize(pixels, self.output_size(*pixels.shape[-2:]))
        if self.crop is not None:
            x = _centre_crop(x, *self.crop)
        return self._normalise(x)

    def apply_square(self, pixels: Tensor) -> Tensor:
        """The whole image squeezed to the input square (no crop): patch i then covers the same cell of the image."""
        s = self.input_size
        return self._normalise(self._resize(pixels, (s, s)))


def _centre_crop(x: Tensor, ch: int, cw: int) -> Tensor:
    """Centre crop as the processors do it (offsets truncated; zero padding where the image is smaller)."""
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        pad = [max(cw - w, 0) // 2, (max(cw - w, 0) + 1) // 2, max(ch - h, 0) // 2, (max(ch - h, 0) + 1) // 2]
        x = F.pad(x, pad)
        h, w = x.shape[-2:]
    top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
    return x[..., top:top + ch, left:left + cw]


def _field(size, key: str):
    """A SizeDict's or a plain dict's field (processors have held both)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _resize_rule(processor, where: str) -> tuple[str, int, int] | None:
    if not getattr(processor, "do_resize", True):
        return None
    size = getattr(processor, "size", None)
    if isinstance(size, int):
        return ("exact", size, size)
    if _field(size, "shortest_edge") and not _field(size, "longest_edge"):
        return ("short", int(_field(size, "shortest_edge")), 0)
    if _field(size, "height") and _field(size, "width"):
        return ("exact", int(_field(size, "height")), int(_field(size, "width")))
    raise CheckpointError(f"{where}: preprocessor_config.json has a size brivl cannot apply ({size}); "
                          f"expected shortest_edge or height and width")


def _interpolation(resample) -> str:
    value = getattr(resample, "value", resample)
    if isinstance(value, str):  # a torchvision InterpolationMode's value, e.g. "bicubic"
        return value if value in ("nearest", "bilinear", "bicubic") else "bicubic"
    return _MODES.get(int(value), "bicubic") if value is not None else "bilinear"


def _triple(value) -> tuple[float, float, float]:
    """A per-channel mean or std (one number stands for all three)."""
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    return values[0], values[1], values[2]


def settings_of(processor, where: str) -> ImageSettings:
    """The ImageSettings of a loaded transformers image processor (class defaults included)."""
    crop = None
    if getattr(processor, "do_center_crop", False):
        cs = processor.crop_size
        crop = (int(cs), int(cs)) if isinstance(cs, int) else (int(_field(cs, "height")), int(_field(cs, "width")))
    rule = _resize_rule(processor, where)
    if crop is None and (rule is None or rule[0] != "exact" or rule[1] != rule[2]):
        raise CheckpointError(f"{where}: the processor neither crops nor resizes to a square; brivl's image towers "
                              f"take a square input")
    # Pixels here are in [0, 1]; the processor rescales 0-255 values by rescale_factor (1/255 as a rule).
    scale = 255.0 * float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 255.0
    normalise = getattr(processor, "do_normalize", True)
    mean = _triple(processor.image_mean) if normalise else (0.0, 0.0, 0.0)
    std = _triple(processor.image_std) if normalise else (1.0, 1.0, 1.0)
    return ImageSettings(rule, crop, _interpolation(getattr(processor, "resample", None)), scale, mean, std)
