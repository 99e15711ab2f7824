"""Every result as a download: the picture as PNG and its settings as JSON, side by side in a fresh folder."""
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from brivl.viz.figures import to_uint8

_ROOT: list[Path] = []


def results_root() -> Path:
    """The folder results are written under (a temporary folder of this process, which Gradio may serve)."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="brivl-studio-")))
    return _ROOT[0]


def to_array(image) -> np.ndarray:
    """A uint8 [H, W, 3] array from a tensor [3,H,W]/[1,3,H,W] in [0, 1], a PIL image or an array."""
    if hasattr(image, "detach"):
        return to_uint8(image)
    return np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "-" for ch in text.lower())[:40].strip("-")
    while "--" in keep:
        keep = keep.replace("--", "-")
    return keep or "result"


def save(kind: str, image, settings: dict, label: str = "") -> list[str]:
    """Write <kind>-<label>.png and .json (settings plus kind, time and image size); returns both paths."""
    folder = results_root() / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    stem = f"{kind}-{_slug(label)}" if label else kind
    array = to_array(image)
    png = folder / f"{stem}.png"
    Image.fromarray(array).save(png, format="PNG")
    info = {"kind": kind, **settings, "image": png.name, "width": int(array.shape[1]), "height": int(array.shape[0]),
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
    meta = folder / f"{stem}.json"
    meta.write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return [str(png), str(meta)]


def side_by_side(images: list, gap: int = 8) -> np.ndarray:
    """Images (same height after padding) in one row with a white gap, as uint8 [H, W, 3]."""
    arrays = [to_array(im) for im in images]
    h = max(a.shape[0] for a in arrays)
    parts = []
    for i, a in enumerate(arrays):
        if a.shape[0] < h:
            a = np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts.append(a)
        if i < len(arrays) - 1:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(parts, axis=1)


def figure_array(fig) -> np.ndarray:
    """A matplotlib Figure rendered to uint8 [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib loads only to draw

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
