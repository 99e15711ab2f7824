"""Zero-shot image classification: class names through prompt templates, images ranked against them."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserInputError
from ..progress import bar as progress_bar

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@torch.no_grad()
def class_embeddings(model, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                     batch_size: int = 128, progress: bool = False) -> Tensor:
    """One unit vector per class [C, d]: the normalised mean of its prompts' text embeddings."""
    if not class_names:
        raise UserInputError("no class names given")
    out = []
    for start in progress_bar(range(0, len(class_names), batch_size), progress=progress, desc="class prompts"):
        names = class_names[start:start + batch_size]
        per_template = [model.encode_text([t.format(n) for n in names]) for t in templates]
        out.append(F.normalize(torch.stack(per_template).mean(0), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def zero_shot_logits(model, pixels: Tensor, class_emb: Tensor, batch_size: int = 32) -> Tensor:
    """Cosine similarity of each image [N, 3, H, W] with each class embedding: [N, C]."""
    return torch.cat([model.encode_image(pixels[i:i + batch_size]) @ class_emb.T
                      for i in range(0, len(pixels), batch_size)])


def topk_hits(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Percentage of rows whose target index is among the k highest logits, for each k."""
    ranks = (logits > logits.gather(1, targets[:, None])).sum(dim=1)
    return {f"top{k}": 100.0 * (ranks < k).float().mean().item() for k in ks}
