"""Contrastive losses: the paper's cross-modal MoCo InfoNCE (eq. 10-12) and an in-batch one for the ablation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def queue_infonce(query: Tensor, queue: Tensor, positions: Tensor, temperature: float) -> Tensor:
    """InfoNCE of queries [B, d] against a key queue [d, K] that already holds each query's positive.

    positions[i] is the queue column of query i's positive key p_i; every other column is a negative,
    so the denominator is exp(z.p/t) + sum over Q minus {p} of exp(z.n/t), as in eq. 10-11.
    """
    return F.cross_entropy(query @ queue / temperature, positions)


def moco_loss(z_img: Tensor, z_txt: Tensor, img_queue: Tensor, txt_queue: Tensor, positions: Tensor,
              temperature: float) -> tuple[Tensor, Tensor]:
    """Cross-modal MoCo loss (eq. 10-12): images against the text queue, texts against the image queue.

    The queues already hold this batch's momentum keys at `positions` (the paper pushes N_t into Q
    before the loss). Returns (L_i2t, L_t2i); the total (eq. 12) is their sum.
    """
    return (queue_infonce(z_img, txt_queue, positions, temperature),
            queue_infonce(z_txt, img_queue, positions, temperature))


def inbatch_loss(z_img: Tensor, z_txt: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """SimCLR/CLIP-style loss: each pair's negatives are the other pairs of the same batch. Returns (L_i2t, L_t2i)."""
    logits = z_img @ z_txt.T / temperature
    target = torch.arange(len(z_img), device=z_img.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)
