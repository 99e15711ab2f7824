"""The text tower: transformers backbone -> per-token L2 norm -> self-attention -> masked mean -> MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from ..config import TextTowerConfig
from ..hf import text_backbone
from .blocks import MLP, masked_mean, self_attention_block


class TextBackbone(nn.Module):
    """Holds the transformers model under `.bert`, the attribute name the release uses for any backbone."""

    def __init__(self, backbone: dict, pooler: bool = True):
        super().__init__()
        self.bert = text_backbone(backbone, pooler)


class TextEncoder(nn.Module):
    """Text tower with the release's module names (`backbone.bert`, `learnable.{textAtt,textFC}`)."""

    def __init__(self, cfg: TextTowerConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = TextBackbone(cfg.backbone, cfg.backbone_pooler)
        self.learnable = nn.ModuleDict({
            "textAtt": self_attention_block(cfg.hidden_size, cfg.att_heads, cfg.att_layers, cfg.att_ff_dim, cfg.dropout),
            "textFC": MLP(cfg.hidden_size, cfg.mlp_hidden or embed_dim, embed_dim),
        })

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The backbone's last hidden states [N, L, hidden]: all the heads need of a frozen backbone."""
        # The release runs the backbone with no attention mask (padding is attended to); kept selectable.
        mask = attention_mask if self.cfg.use_attention_mask else torch.ones_like(attention_mask)
        out = self.backbone.bert(input_ids=input_ids, attention_mask=mask,
                                 token_type_ids=torch.zeros_like(input_ids))
        return out.last_hidden_state

    def tokens(self, input_ids: Tensor | None, attention_mask: Tensor, hidden: Tensor | None = None) -> Tensor:
        """L2-normalised token vectors [N, L, hidden], from ids or from cached hidden states."""
        if hidden is None:
            hidden = self.hidden_states(input_ids, attention_mask)
        return F.normalize(hidden, dim=-1)

    def attend(self, input_ids: Tensor | None, attention_mask: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Token vectors after the self-attention block [N, L, hidden]."""
        pad = attention_mask == 0
        return self.learnable["textAtt"](self.tokens(input_ids, attention_mask, hidden), src_key_padding_mask=pad)

    def forward(self, input_ids: Tensor | None, attention_mask: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Joint-space text embeddings [N, embed_dim], L2-normalised (hidden skips a frozen backbone)."""
        fused = masked_mean(self.attend(input_ids, attention_mask, hidden), attention_mask == 0)
        return F.normalize(self.learnable["textFC"](fused), dim=-1)
