"""Building blocks shared by both towers: the self-attention block, masked mean and the MLP head."""
from __future__ import annotations

from torch import Tensor, nn


class NoSelfAttention(nn.Module):
    """The paper's "w/o SA" ablation: patch/token vectors pass straight to the mean."""

    def forward(self, x: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        return x


def self_attention_block(dim: int, heads: int, layers: int, ff_dim: int, dropout: float) -> nn.Module:
    """A stack of post-norm ReLU TransformerEncoderLayers, as in the release (its keys are `layers.N.*`)."""
    if layers == 0:
        return NoSelfAttention()
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff_dim, dropout=dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def masked_mean(x: Tensor, pad_mask: Tensor | None) -> Tensor:
    """Mean over the sequence axis of [N, L, D], ignoring positions where pad_mask [N, L] is True."""
    if pad_mask is None:
        return x.mean(dim=1)
    keep = (~pad_mask).to(x.dtype).unsqueeze(-1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


class MLP(nn.Sequential):
    """Two linear layers with a ReLU between them, named fc1/fc2 as in the release."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_dim)
