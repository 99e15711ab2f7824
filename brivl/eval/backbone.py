"""A BriVL model's text backbone on its own, as a text-only model: the paper's single-modal baselines.

Fig. 5a/5c compare RoBERTa-large with "BriVL w/ RoBERTa-large": the same backbone before and after cross-modal
pre-training. `TextBackboneModel(model)` gives that baseline for any BriVL: the backbone's last hidden states,
mean-pooled over the real tokens and L2-normalised (the usual sentence embedding of an encoder; for e5 it is the
pooling e5 was trained with). It shares the BriVL's tokenizer, prefix and weights, and has no image tower.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NotSupportedError
from ..twotower import HasTextBackbone, model_name


class TextBackboneModel(nn.Module):
    """The text backbone of a BriVL alone: encode_text = masked mean of its last hidden states, L2-normalised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, HasTextBackbone):
            raise NotSupportedError(f"{type(model).__name__} has no BriVL text tower (tokenize + textencoder) to take the "
                            f"backbone from")
        object.__setattr__(self, "brivl", model)  # not registered: state_dict() is the backbone's weights alone
        self.backbone = model.textencoder.backbone
        self.train(model.training)  # a new Module starts in training mode; take the BriVL's (the backbone is shared)
        self.name = f"{model_name(model)} text backbone"

    @property
    def embed_dim(self) -> int:
        """Width of the backbone's hidden states."""
        return int(self.backbone.bert.config.hidden_size)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised mean of the backbone's last hidden states over each text's tokens [n, hidden]."""
        enc = self.brivl.tokenize(texts)
        hidden = self.brivl.textencoder.hidden_states(enc["input_ids"], enc["attention_mask"])
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)

    def encode_image(self, pixels: Tensor) -> Tensor:
        """A text backbone has no image tower."""
        raise NotSupportedError(f"{self.name} is a text-only model: it has no image tower")

    def fingerprint_parts(self) -> dict:
        """What identifies this model's text embeddings, for caches keyed on them (see viz.phrases)."""
        cfg = getattr(self.brivl, "config", None)
        return {"kind": "text-backbone", "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None}
