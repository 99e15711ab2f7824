"""Checks on what users pass to the encoders: clear errors instead of silent nonsense."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import InputError  # noqa: F401 - re-exported: the names callers know


def check_texts(texts: Sequence[str] | str) -> list[str]:
    """Return texts as a list, refusing an empty list, non-strings and empty or blank strings."""
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string: pass [text]")
    texts = list(texts)
    if not texts:
        raise InputError("no texts given: encode_text needs at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"text {i} is empty or only whitespace; give it some words")
        bad = unicode_problem(t)
        if bad:
            raise InputError(f"text {i} {bad}")
    return texts


def unicode_problem(text: str) -> str | None:
    """Why text cannot be tokenized (a lone surrogate, which invalid UTF-8 decodes to), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"holds a lone surrogate {text[e.start]!r} at character {e.start}, not valid Unicode "
                f"(invalid UTF-8 in the input?)")
    return None


def check_pixels(pixels: Tensor) -> Tensor:
    """Refuse anything but a finite float [N, 3, H, W] tensor with values in [0, 1]."""
    if not isinstance(pixels, Tensor):
        raise InputError(f"pixels must be a torch.Tensor, got {type(pixels).__name__}")
    shape = tuple(pixels.shape)
    if pixels.dim() == 3 and shape[0] == 3:
        raise InputError(f"pixels have shape {shape}; add a batch dimension: pixels[None] -> (1, {', '.join(map(str, shape))})")
    if pixels.dim() != 4 or shape[1] != 3:
        raise InputError(f"pixels must have shape (N, 3, H, W) with RGB channels; got {shape}")
    if min(shape) == 0:
        raise InputError(f"pixels have an empty dimension: {shape}")
    if not pixels.is_floating_point():
        raise InputError(f"pixels must be floats in [0, 1], got dtype {pixels.dtype}; use x.float() / 255")
    with torch.no_grad():
        if not torch.isfinite(pixels).all():
            raise InputError("pixels contain NaN or Inf")
        lo, hi = pixels.min().item(), pixels.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = "; divide by 255" if hi > 2 else ""
        raise InputError(f"pixels must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]{hint}")
    if pixels.dtype == torch.float64:  # numpy's default float: the model's weights are float32
        pixels = pixels.float()
    return pixels
