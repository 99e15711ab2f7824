"""Reading image files into [0, 1] RGB tensors, with clear errors for files that are not images."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .inputs import InputError


def load_image(path: str | Path) -> Tensor:
    """Read an image file as a float [3, H, W] RGB tensor in [0, 1]; grey, palette and alpha images are converted."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decode now, so truncated files fail here and not later
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (no image format recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: the image is damaged or truncated ({e})") from None
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb(im: Image.Image) -> Image.Image:
    # Transparent pixels go on white, as a viewer shows them, rather than on whatever colour they hide.
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit greys are out of 65535 (the format's white), never out of the image's own maximum, which would
        # turn a uniform dark grey white; floats already in [0, 1] keep their values.
        array = np.asarray(im, dtype=np.float64)
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
        if im.mode.startswith("I;16"):
            top = 65535.0
        else:  # 32-bit integers and floats have no agreed white: the brightest pixel is
            top = 1.0 if im.mode == "F" and array.max() <= 1.0 else (array.max() or 1.0)
        return Image.fromarray(np.clip(array / top * 255 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def load_images(paths: list[str | Path], size: int) -> Tensor:
    """Read several image files into one [N, 3, size, size] batch (bilinear resize, no antialias)."""
    if not paths:
        raise InputError("no image files given")
    batch = [F.interpolate(load_image(p)[None], size=(size, size), mode="bilinear", align_corners=False)
             for p in paths]
    return torch.cat(batch).clamp_(0, 1)
