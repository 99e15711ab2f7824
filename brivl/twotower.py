"""The TwoTower protocol: the one interface viz, eval and the app use to talk to any model."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class TwoTower(Protocol):
    """A two-tower vision-language model with L2-normalised embeddings in one joint space."""

    image_size: int
    embed_dim: int

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Text embeddings [n, d], L2-normalised."""
        ...

    def encode_image(self, pixels: Tensor) -> Tensor:
        """Image embeddings [n, d] of RGB pixels in [0, 1], any size; differentiable in the pixels."""
        ...

    def feature_layers(self) -> dict[str, nn.Module]:
        """Named layers a neuron objective may hook."""
        ...


# What only some models have: check with isinstance(model, HasPatches) etc., never with hasattr.

@runtime_checkable
class HasPatches(Protocol):
    """A model whose image tower embeds patches (BriVL: the 37 MSPP patches), for attribution."""

    def patch_embeddings(self, pixels: Tensor) -> Tensor:
        """Patch embeddings [n, P, d] of pixels [n, 3, H, W] in [0, 1]."""
        ...

    def patch_boxes(self) -> Tensor:
        """The patches' boxes [P, 4] as (x0, y0, x1, y1) fractions of the image side."""
        ...


@runtime_checkable
class HasTextBackbone(Protocol):
    """A model with a separable text backbone and its tokenizer (BriVL: textencoder.backbone, tokenize)."""

    textencoder: nn.Module

    def tokenize(self, texts: Sequence[str], warn: bool = True) -> dict[str, Tensor]:
        """Token ids and attention mask of texts."""
        ...


@runtime_checkable
class Described(Protocol):
    """A model that names itself and says what its embeddings depend on (for indexes and run records)."""

    name: str

    def fingerprint_parts(self) -> dict:
        """JSON-able facts that change whenever the model's embeddings may change (its config, its kind)."""
        ...


def model_name(model: object) -> str:
    """A model's name for messages and records: its own, else its class's."""
    return model.name if isinstance(model, Described) else type(model).__name__
