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
