"""One way to hold a model still while something else is optimised or measured: `with frozen(model): ...`."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from torch import nn

M = TypeVar("M")


@contextmanager
def frozen(model: M, *, grads: bool = True) -> Iterator[M]:
    """Eval mode for the block (BatchNorm uses and keeps its running statistics, dropout is off), restored after.

    With grads=False the parameters also stop requiring gradients for the block (only the input, e.g. an image
    being optimised, receives them). Everything is put back on exit, also after an exception. A model that is
    not an nn.Module (any TwoTower) passes through unchanged.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    flags = [] if grads else [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        if was_training:
            model.train()
