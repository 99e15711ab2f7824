"""Side by side: the same texts, seed and settings imagined by two (or more) models, each render scored by every model.

A render's cosine to its text under the model that made it says how well the optimisation did; under the *other*
model it says whether the picture carries the concept at all. A high own score with a cross score near the
other model's baseline is an adversarial pattern of one model, not a picture of the text. Two references come with
the scores: each model's cosine of a plain grey image to each text, and each render's margin (its cosine to its own
text minus the mean to the grid's other texts), which does not move with what any textured picture scores.
"""
from __future__ import annotations

import platform
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from brivl.errors import UserInputError
from brivl.twotower import TwoTower

from .figures import save_grid, write_json
from .network import imagine, imagine_size
from .scores import cross_scores, text_matrix

LETTERS = "ABCDEFGH"


@dataclass
class SideBySide:
    """Renders [models, texts, 3, H, W] and scores [render model, scoring model, text] (cosine to the text)."""

    names: list[str]
    texts: list[str]
    images: Tensor
    scores: Tensor
    baseline: Tensor  # [scoring model, text]: the cosine of a grey image, what "no concept" scores
    seconds: list[float]
    settings: dict
    margin: Tensor | None = None  # [render, judge, text]: cosine to its own text minus the mean to the grid's others

    def as_dict(self) -> dict:
        """JSON-able: per render, its cosine (and margin) under each model, and each model's grey-image baseline."""
        rows = []
        for m, name in enumerate(self.names):
            for t, text in enumerate(self.texts):
                row = {"rendered_by": name, "text": text, "cosine": {
                    judge: round(float(self.scores[m, j, t]), 4) for j, judge in enumerate(self.names)}}
                if self.margin is not None:
                    row["margin"] = {judge: round(float(self.margin[m, j, t]), 4) for j, judge in enumerate(self.names)}
                rows.append(row)
        grey = {judge: [round(float(v), 4) for v in self.baseline[j]] for j, judge in enumerate(self.names)}
        return {"models": self.names, "texts": self.texts, "renders": rows, "grey_baseline": grey,
                "time_s": [round(s, 3) for s in self.seconds], **self.settings}


def compare_imagine(models: Sequence[TwoTower], names: Sequence[str], texts: Sequence[str], *, steps: int = 128,
                    size: int | None = None, seed: int = 0, param: str = "fft", decorrelate: bool = True,
                    lr: float = 0.05, progress: bool | None = None,
                    callback: Callable[[str, int, Tensor], None] | None = None) -> SideBySide:
    """Imagine each text with each model at the same seed and settings; score every render under every model."""
    if len(models) < 2 or len(models) != len(names) or len(models) > len(LETTERS):
        raise UserInputError(f"compare takes 2 to {len(LETTERS)} models with one name each; got {len(models)} "
                             f"models and {len(names)} names")
    texts = list(texts)
    if not texts or any(not t.strip() for t in texts):
        raise UserInputError("give at least one non-empty text to imagine")
    side = size or min(imagine_size(m) for m in models)  # one size for all: the renders must be comparable
    settings = {"steps": steps, "size": side, "seed": seed, "param": param, "decorrelate": decorrelate, "lr": lr}
    images, seconds = [], []
    for model, name in zip(models, names):
        t0 = time.perf_counter()
        cb = None if callback is None else (lambda step, imgs, n=name: callback(n, step, imgs))
        r = imagine(model, texts, progress=progress, callback=cb, **settings)
        images.append(r.images.detach().cpu())
        seconds.append(time.perf_counter() - t0)
    full = torch.stack([torch.stack([text_matrix(judge, imgs, texts) for judge in models]) for imgs in images])
    scores = full.diagonal(dim1=-2, dim2=-1)  # [render, judge, text]: each render against its own text
    k = len(texts)
    # How much closer a render is to its own text than to the grid's other texts: blind to what any picture scores.
    margin = scores - (full.sum(-1) - scores) / (k - 1) if k > 1 else None
    grey = torch.full((k, 3, side, side), 0.5)
    return SideBySide(list(names), texts, torch.stack(images), scores, cross_scores(models, grey, texts), seconds,
                      {**settings, "torch": torch.__version__, "python": platform.python_version()}, margin)


def draw(result: SideBySide, path: str | Path) -> Path:
    """One grid: a row per model, a column per text; under each render its cosine under every model."""
    letters = LETTERS[:len(result.names)]
    titles, captions = [], []
    for m in range(len(result.names)):
        for t, text in enumerate(result.texts):
            titles.append(f"{letters[m]}: \u201c{text}\u201d")
            captions.append("  ".join(f"{'*' if j == m else ''}{letters[j]} {float(result.scores[m, j, t]):+.3f}"
                                      for j in range(len(result.names))))
    legend = ", ".join(f"{letters[i]} = {n}" for i, n in enumerate(result.names))
    s = result.settings
    title = textwrap.fill(f"{legend}; {s['steps']} steps, {s['size']} px, seed {s['seed']}. Under each render: its "
                          f"cosine to the text under each model (* the model that made it)",
                          max(40, 22 * len(result.texts)))
    images = result.images.reshape(-1, *result.images.shape[2:])
    return save_grid(images, path, titles=titles, captions=captions, ncols=len(result.texts), title=title,
                     cell=2.2, wrap=30)


def write(result: SideBySide, path: str | Path) -> tuple[Path, Path]:
    """The grid as a PNG at path and the numbers as JSON beside it."""
    png = draw(result, path)
    return png, write_json({**result.as_dict(), "image": png.name}, png.with_suffix(".json"))
