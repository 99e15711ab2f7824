"""Scores of rendered images under any model: the cosine of each image to its text, for cross-model checks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.errors import UserInputError
from brivl.twotower import TwoTower

__all__ = ["cross_scores"]


@torch.no_grad()
def cross_scores(models: Sequence[TwoTower], images: Tensor, texts: Sequence[str]) -> Tensor:
    """Cosine of image i to text i under each model [models, n] (images [n, 3, H, W] in [0, 1])."""
    if len(images) != len(texts):
        raise UserInputError(f"{len(images)} images for {len(texts)} texts; give one text per image")
    out = []
    for model in models:
        device = next(iter(model.parameters())).device if isinstance(model, torch.nn.Module) else "cpu"
        z = F.normalize(model.encode_image(images.to(device)), dim=-1)
        t = F.normalize(model.encode_text(list(texts)), dim=-1)
        out.append((z * t).sum(-1).float().cpu())
    return torch.stack(out)
