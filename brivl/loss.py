"""Contrastive losses: the paper's cross-modal MoCo InfoNCE (eq. 10-12) and an in-batch one for the ablation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def queue_infonce(query: Tensor, positive: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE of queries [B, d] against their positive keys [B, d] and a queue of negatives [d, K] (eq. 10/11)."""
    pos = (query * positive).sum(dim=-1, keepdim=True)  # [B, 1]
    neg = query @ queue  # [B, K]
    logits = torch.cat([pos, neg], dim=1) / temperature
    target = torch.zeros(len(query), dtype=torch.long, device=query.device)  # the positive is column 0
    return F.cross_entropy(logits, target)


def moco_loss(z_img: Tensor, z_txt: Tensor, k_img: Tensor, k_txt: Tensor,
              img_queue: Tensor, txt_queue: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cross-modal MoCo loss (eq. 12): images against text keys + text queue, texts against image keys + image queue.

    Returns (L_i2t, L_t2i); the total is their sum.
    """
    l_i2t = queue_infonce(z_img, k_txt, txt_queue, temperature)
    l_t2i = queue_infonce(z_txt, k_img, img_queue, temperature)
    return l_i2t, l_t2i


def inbatch_loss(z_img: Tensor, z_txt: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """SimCLR/CLIP-style loss: each pair's negatives are the other pairs of the same batch. Returns (L_i2t, L_t2i)."""
    logits = z_img @ z_txt.T / temperature
    target = torch.arange(len(z_img), device=z_img.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
