"""A procedural captioned-shapes data set: smoke tests, benchmarks and ablations of training, offline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import UserInputError

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle", "cross")
BACKDROPS = {"sky": (150, 200, 245), "grass": (110, 170, 90), "sand": (225, 205, 160), "night": (25, 30, 60)}
POSITIONS = {"left": 0.28, "middle": 0.5, "right": 0.72}


def _draw(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def make_toy_pairs(folder: str | Path, n: int, size: int = 96, seed: int = 0, unique: bool = False) -> Path:
    """Write n captioned images ("a red circle on the left, on grass") and a manifest.jsonl; returns the manifest.

    unique=True gives every image a different caption (at most 384), as retrieval benchmarks need.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours, backdrops, positions = list(COLOURS), list(BACKDROPS), list(POSITIONS)
    combos = [(c, s, b, p) for c in colours for s in SHAPES for b in backdrops for p in positions]
    if unique and n > len(combos):
        raise UserInputError(f"only {len(combos)} distinct captions exist; asked for {n}")
    order = rng.permutation(len(combos))[:n] if unique else None
    rows = []
    for i in range(n):
        if order is not None:
            colour, shape, back, pos = combos[order[i]]
        else:
            colour, shape = colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))]
            back, pos = backdrops[rng.integers(len(backdrops))], positions[rng.integers(len(positions))]
        base = np.array(BACKDROPS[back], dtype=np.float32)
        noise = rng.normal(0, 10, (size, size, 3)).astype(np.float32)
        im = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        r = size * rng.uniform(0.14, 0.22)
        cx = size * POSITIONS[pos] + rng.uniform(-0.04, 0.04) * size
        cy = size * rng.uniform(0.35, 0.65)
        _draw(ImageDraw.Draw(im), shape, cx, cy, r, COLOURS[colour])
        name = f"images/{i:06d}.png"
        im.save(folder / name)
        article = "an" if colour[0] in "aeiou" else "a"
        rows.append({"image": name, "text": f"{article} {colour} {shape} on the {pos}, on {back}"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
