"""Cross-modal MoCo (paper eq. 4-12): query towers, momentum towers and two negative queues."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import QueueSizeError, UserInputError
from .loss import inbatch_loss, moco_loss
from .model.brivl import BriVL

LOSSES = ("moco", "inbatch")


def check_queue_size(queue_size: int, global_batch: int) -> None:
    """Refuse a queue size N_q that is not a multiple of the global batch size."""
    if global_batch <= 0 or queue_size % global_batch:
        raise QueueSizeError(
            f"queue size {queue_size} is not a multiple of the global batch {global_batch} "
            f"(per-process batch x processes x accumulation); choose e.g. {max(1, queue_size // max(global_batch, 1)) * max(global_batch, 1)}")


def _local(p: Tensor) -> Tensor:
    # Under ZeRO-3 a parameter's own data is a placeholder and its shard is ds_tensor; query and momentum
    # towers have the same shapes, so their shards line up element for element.
    return p.ds_tensor if hasattr(p, "ds_tensor") else p.data


def gather_keys(x: Tensor) -> Tensor:
    """Concatenate a [B, d] tensor from every process (rank order); the identity without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class CrossModalMoCo(nn.Module):
    """The paper's four-tower pre-training module, named as in the release's 'learnable' dict.

    `imgencoder`/`textencoder` are the model's own towers (trained by gradient); `imgencoder_mom`/
    `textencoder_mom` follow them by theta_m <- m * theta_m + (1 - m) * theta; the queues hold the last
    N_q momentum keys of each modality, oldest overwritten first. With loss="inbatch" there are no
    momentum towers or queues: each pair's negatives are the rest of its batch (SimCLR/CLIP).
    """

    def __init__(self, model: BriVL, loss: str = "moco", queue_size: int | None = None,
                 momentum: float | None = None, temperature: float | None = None):
        super().__init__()
        if loss not in LOSSES:
            raise UserInputError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        cfg = model.config
        self.loss_kind = loss
        self.queue_size = int(queue_size or cfg.queue_size)
        self.momentum = float(cfg.momentum if momentum is None else momentum)
        self.temperature = float(cfg.temperature if temperature is None else temperature)
        self.imgencoder = model.imgencoder
        self.textencoder = model.textencoder
        object.__setattr__(self, "model", model)  # the BriVL that owns the query towers, not a second copy
        if loss == "moco":
            self.imgencoder_mom = copy.deepcopy(model.imgencoder).requires_grad_(False)
            self.textencoder_mom = copy.deepcopy(model.textencoder).requires_grad_(False)
            d, k = cfg.embed_dim, self.queue_size
            g = torch.Generator().manual_seed(0)
            # Random unit keys until real ones arrive, as in MoCo; queue_fill counts the real ones.
            self.register_buffer("img_queue", F.normalize(torch.randn(d, k, generator=g), dim=0))
            self.register_buffer("text_queue", F.normalize(torch.randn(d, k, generator=g), dim=0))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_fill", torch.zeros((), dtype=torch.long))

    def query_parameters(self) -> list[nn.Parameter]:
        """Parameters of the query towers, in a fixed order."""
        return list(self.imgencoder.parameters()) + list(self.textencoder.parameters())

    def momentum_parameters(self) -> list[nn.Parameter]:
        """Parameters of the momentum towers, in the same order as query_parameters."""
        return list(self.imgencoder_mom.parameters()) + list(self.textencoder_mom.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_m <- m * theta_m + (1 - m) * theta (eq. 4-5)."""
        m = self.momentum
        for q, k in zip(self.query_parameters(), self.momentum_parameters()):
            _local(k).mul_(m).add_(_local(q), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, img_keys: Tensor, text_keys: Tensor) -> None:
        """Write a global batch of keys [B, d] over the oldest B entries of each queue."""
        b = img_keys.shape[0]
        check_queue_size(self.queue_size, b)
        ptr = int(self.queue_ptr)
        self.img_queue[:, ptr:ptr + b] = img_keys.T.to(self.img_queue.dtype)
        self.text_queue[:, ptr:ptr + b] = text_keys.T.to(self.text_queue.dtype)
        self.queue_ptr.fill_((ptr + b) % self.queue_size)
        self.queue_fill.fill_(min(self.queue_size, int(self.queue_fill) + b))

    def queue_in_order(self) -> tuple[Tensor, Tensor]:
        """Both queues [d, K] rotated so that column 0 is the oldest key and column K-1 the newest."""
        ptr = int(self.queue_ptr)
        return (torch.roll(self.img_queue, -ptr, dims=1), torch.roll(self.text_queue, -ptr, dims=1))

    def forward(self, pixels: Tensor | None, input_ids: Tensor | None, attention_mask: Tensor,
                box_means: Tensor | None = None, hidden: Tensor | None = None,
                extra: Sequence[tuple[Any, dict[str, Any]]] = ()) -> dict[str, Tensor]:
        """One training step's loss: {'loss', 'loss_i2t', 'loss_t2i'[, 'loss_<term>'...]} (under MoCo, after enqueueing).

        box_means / hidden (cached outputs of frozen backbones) stand in for pixels / input_ids. `extra` holds
        (term, inputs) pairs of extra loss terms (brivl.train.LossTerm): each adds term.weight x
        term.loss(self, z_img, z_txt, inputs) to the loss.
        """
        z_img = self.imgencoder(pixels, box_means=box_means)
        z_txt = self.textencoder(input_ids, attention_mask, hidden)
        if self.loss_kind == "inbatch":
            l_i2t, l_t2i = inbatch_loss(z_img, z_txt, self.temperature)
        else:
            with torch.no_grad():
                self.momentum_update()
                k_img = self.imgencoder_mom(pixels, box_means=box_means)
                k_txt = self.textencoder_mom(input_ids, attention_mask, hidden)
                # The paper pushes this batch's keys N_t into the queues first (eq. 6-9); each query's
                # positive is then one column of Q and all other columns, this batch's included, are
                # its negatives (eq. 10-11: Q minus {p}).
                ptr = int(self.queue_ptr)
                self.enqueue(gather_keys(k_img), gather_keys(k_txt))
                rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
                positions = ptr + rank * len(k_img) + torch.arange(len(k_img), device=k_img.device)
            l_i2t, l_t2i = moco_loss(z_img, z_txt, self.img_queue.clone(), self.text_queue.clone(), positions,
                                     self.temperature)
        out = {"loss": l_i2t + l_t2i, "loss_i2t": l_i2t.detach(), "loss_t2i": l_t2i.detach()}
        for term, inputs in extra:
            value = term.loss(self, z_img, z_txt, inputs)
            out["loss"] = out["loss"] + float(term.weight) * value
            out[f"loss_{term.name}"] = value.detach()
        return out
