"""Scores of rendered images under any model: the cosine of each image to its text, for cross-model checks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.errors import UserInputError
from brivl.twotower import TwoTower

__all__ = ["cross_scores", "text_matrix"]


def _device(model: TwoTower) -> torch.device | str:
    return next(iter(model.parameters())).device if isinstance(model, torch.nn.Module) else "cpu"


@torch.no_grad()
def text_matrix(model: TwoTower, images: Tensor, texts: Sequence[str]) -> Tensor:
    """Cosine of every image to every text under one model [n images, k texts]."""
    z = F.normalize(model.encode_image(images.to(_device(model))), dim=-1)
    t = F.normalize(model.encode_text(list(texts)), dim=-1)
    return (z @ t.T).float().cpu()


@torch.no_grad()
def cross_scores(models: Sequence[TwoTower], images: Tensor, texts: Sequence[str]) -> Tensor:
    """Cosine of image i to text i under each model [models, n] (images [n, 3, H, W] in [0, 1])."""
    if len(images) != len(texts):
        raise UserInputError(f"{len(images)} images for {len(texts)} texts; give one text per image")
    out = []
    for model in models:
        z = F.normalize(model.encode_image(images.to(_device(model))), dim=-1)
        t = F.normalize(model.encode_text(list(texts)), dim=-1)
        out.append((z * t).sum(-1).float().cpu())
    return torch.stack(out)
