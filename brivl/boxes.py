"""Boxes as input to the image tower: checks, scaling to the model's input, padding, and the release's JSONL."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import load_image
from .inputs import InputError

# The release keeps the first MAX_IMG_LEN - 1 = 36 boxes of a JSONL line (its example lines hold about 100).
RELEASE_MAX_BOXES = 36
# Slack for coordinates that left the image edge only by rounding (e.g. after scaling to another size).
EDGE_SLACK = 1e-3

Boxes = Sequence[Sequence[float]] | Tensor


def check_boxes(boxes: Sequence[Boxes | None] | Tensor, n_images: int, height: int, width: int,
                max_boxes: int, names: Sequence[str] | None = None) -> list[Tensor | None]:
    """Per-image [k, 4] float64 boxes [x1, y1, x2, y2] in pixels of a height x width image (None: the grid)."""
    if isinstance(boxes, Tensor) and boxes.dim() != 3:
        raise InputError(f"boxes must be one [k, 4] entry per image (a list, or an [N, k, 4] tensor); "
                         f"got a tensor of shape {tuple(boxes.shape)}")
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, (Sequence, Tensor)):
        raise InputError(f"boxes must be a list with one entry per image, got {type(boxes).__name__}")
    if len(boxes) != n_images:
        raise InputError(f"boxes must hold one entry per image (None for the grid): got {len(boxes)} for "
                         f"{n_images} image(s)")
    return [None if b is None else _check_one(b, height, width, max_boxes, names[i] if names else f"image {i}")
            for i, b in enumerate(boxes)]


def _check_one(boxes: Boxes, height: int, width: int, max_boxes: int, label: str) -> Tensor:
    """One image's boxes as a float64 [k, 4] tensor, or an InputError that names the image and the box."""
    try:
        b = torch.as_tensor(boxes if isinstance(boxes, Tensor) else list(boxes), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{label}: boxes must be numbers [[x1, y1, x2, y2], ...]") from None
    if b.numel() == 0:
        return b.reshape(0, 4)  # no boxes: the whole image alone
    if b.dim() != 2 or b.shape[1] != 4:
        raise InputError(f"{label}: boxes must have shape (k, 4) as [x1, y1, x2, y2]; got {tuple(b.shape)}")
    if len(b) > max_boxes:
        raise InputError(f"{label} has {len(b)} boxes; at most {max_boxes} are allowed (the model adds the whole "
                         f"image as number {max_boxes + 1}); the release keeps the first {max_boxes}")
    if not torch.isfinite(b).all():
        raise InputError(f"{label}: boxes contain NaN or Inf")
    x1, y1, x2, y2 = b.unbind(-1)
    outside = (x1 < -EDGE_SLACK) | (y1 < -EDGE_SLACK) | (x2 > width + EDGE_SLACK) | (y2 > height + EDGE_SLACK)
    if outside.any():
        j = int(outside.nonzero()[0])
        raise InputError(f"{label}, box {j} {_fmt(b[j])} lies outside the {width}x{height} image "
                         f"(x in 0..{width}, y in 0..{height}, pixels of the image given)")
    inverted = (x2 < x1) | (y2 < y1)
    if inverted.any():
        j = int(inverted.nonzero()[0])
        raise InputError(f"{label}, box {j} {_fmt(b[j])} has x2 < x1 or y2 < y1; boxes are [x1, y1, x2, y2]")
    return b


def _fmt(box: Tensor) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def scale_boxes(boxes: Tensor, height: int, width: int, size: int) -> Tensor:
    """Boxes in pixels of a height x width image -> pixels of the size x size model input, as the release scales."""
    return boxes * boxes.new_tensor([size / width, size / height, size / width, size / height])


def pack_boxes(per_image: Sequence[Tensor | None], grid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """[N, P, 4] float32 boxes in model pixels and the [N, P] padding mask (True: padding).

    Each image gets its boxes, then the whole image (the release's order); None gets `grid` (which ends with the
    whole image). Shorter lists are padded with zero boxes that the mask keeps out of the attention and the mean.
    """
    whole = torch.tensor([[0.0, 0.0, float(size), float(size)]], dtype=torch.float64)
    rows = [grid.double().cpu() if b is None else torch.cat([b, whole]) for b in per_image]
    p = max(len(r) for r in rows)
    packed = torch.zeros(len(rows), p, 4, dtype=torch.float64)
    pad = torch.ones(len(rows), p, dtype=torch.bool)
    for i, r in enumerate(rows):
        packed[i, :len(r)], pad[i, :len(r)] = r, False
    return packed.float(), pad


@dataclass
class BoxedImage:
    """One line of the release's JSONL: an image, its texts (key -> text) and its first 36 detector boxes."""

    image: Path
    sentences: dict[str, str]
    boxes: list[list[float]]


def read_release_jsonl(path: str | Path, need_text: bool = False) -> list[BoxedImage]:
    """Lines {"image_id", "sentences": [[key, text], ...], "bbox": [[x1, y1, x2, y2], ...]} as the release reads them.

    Image paths are taken relative to the file's folder, else to the current folder (where the release's own
    scripts run); only the first 36 boxes are kept, as the release does.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such boxes file (JSONL lines with image_id and bbox)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            rows.append(release_row(line, path, n, need_text))
    if not rows:
        raise InputError(f"{path}: no lines")
    return rows


def release_row(line: str, source: Path, n: int, need_text: bool = False) -> BoxedImage:
    """Parse one JSONL line of the release's format (see read_release_jsonl)."""
    try:
        row = json.loads(line)
        image = row["image_id"] if "image_id" in row else row["image"]
        bbox = row.get("bbox", [])
        sentences = row.get("sentences", [])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{source}:{n}: expected a JSON object with image_id and bbox ({e})") from None
    if not isinstance(bbox, list) or not all(isinstance(b, list) and len(b) == 4 for b in bbox):
        raise InputError(f"{source}:{n}: bbox must be a list of [x1, y1, x2, y2]")
    texts = _sentences(sentences, source, n)
    if need_text and not texts:
        raise InputError(f"{source}:{n}: no sentences")
    return BoxedImage(resolve_image(str(image), source.parent), texts, bbox[:RELEASE_MAX_BOXES])


def _sentences(sentences, source: Path, n: int) -> dict[str, str]:
    """The release's [[key, text], ...] (or a plain list of texts, keyed by position) as {key: text}."""
    if not isinstance(sentences, list):
        raise InputError(f"{source}:{n}: sentences must be a list of [key, text] pairs")
    out: dict[str, str] = {}
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            out[str(i)] = s
        elif isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s):
            out.setdefault(s[0], s[1])
        else:
            raise InputError(f"{source}:{n}: sentences must be [key, text] pairs, got {s!r:.60}")
    return out


def release_caption(row: BoxedImage) -> list[str]:
    """The text the release pairs with an image: its 'sur_text' (else every text of the line)."""
    if "sur_text" in row.sentences:
        return [row.sentences["sur_text"]]
    return list(row.sentences.values())


def resolve_image(name: str, folder: Path) -> Path:
    """An image path of a manifest: relative to the manifest's folder, else to the current folder, if it exists."""
    first = folder / name
    if first.is_file() or not Path(name).is_file():
        return first
    return Path(name)


def boxes_for(images: Sequence[str | Path], rows: Sequence[BoxedImage], source: str | Path) -> list[list[list[float]]]:
    """Each image's boxes from the JSONL rows: matched by path, else by a file name that only one row has."""
    by_path = {r.image.resolve(): r.boxes for r in rows}
    names: dict[str, list[BoxedImage]] = {}
    for r in rows:
        names.setdefault(r.image.name, []).append(r)
    out = []
    for image in images:
        hit = by_path.get(Path(image).resolve())
        if hit is None and len(names.get(Path(image).name, [])) == 1:
            hit = names[Path(image).name][0].boxes
        if hit is None:
            raise InputError(f"{image}: no line of {source} names this image (image_id)")
        out.append(hit)
    return out


def load_images_with_boxes(paths: Sequence[str | Path], boxes: Sequence[Boxes | None], size: int,
                           max_boxes: int) -> tuple[Tensor, list[Tensor | None]]:
    """Image files as an [N, 3, size, size] batch, and their boxes (pixels of each file) scaled to that size."""
    if len(boxes) != len(paths):
        raise InputError(f"got boxes for {len(boxes)} images but {len(paths)} image files")
    pixels, scaled = [], []
    for path, b in zip(paths, boxes):
        image = load_image(path)
        h, w = image.shape[-2:]
        checked = check_boxes([b], 1, h, w, max_boxes, names=[str(path)])[0]
        scaled.append(None if checked is None else scale_boxes(checked, h, w, size))
        pixels.append(F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(pixels).clamp_(0, 1), scaled
