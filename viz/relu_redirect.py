"""Redirected ReLU gradients: let a render start where the units it needs are dead.

Feature visualisation from a flat start can see no gradient at all: on a grey image brivl-lite's LLP
(EfficientNet-Lite0's last ReLU6 map) has 0.2% of its channels above zero, so maximising channel 108 never
moves the image. While a render runs, each ReLU / ReLU6 module of the model passes its usual gradient, but
for any image whose gradient through that module is zero everywhere it passes the gradient instead wherever
it pushes a clamped unit back towards the linear range (the "redirected ReLU" of Olah et al.'s Lucid).
Forward values are unchanged, and so is every gradient that was not zero. The backward pass must be of a
loss to minimise (render differentiates minus the objective).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class _RedirectedClamp(torch.autograd.Function):
    """clamp(x, lo, hi) whose backward redirects the gradient for rows that would otherwise get none."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float | None, state: Redirect) -> Tensor:  # noqa: D102 - autograd
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.state = lo, hi, state
        return x.clamp(min=lo, max=hi)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: D102 - autograd protocol
        (x,) = ctx.saved_tensors
        blocked = x <= ctx.lo if ctx.hi is None else (x <= ctx.lo) | (x >= ctx.hi)
        usual = grad.masked_fill(blocked, 0.0)
        silent = usual.flatten(1).abs().amax(dim=1) == 0 if x.dim() > 1 else usual.abs().amax().eq(0).view(1)
        # Most rows get a gradient after the first few steps: then the usual one is the answer, and the
        # redirected mask (three more passes over the map) is not built. One host sync per unit.
        if not bool(silent.any()):
            return usual, None, None, None
        ctx.state.fired += 1
        # grad is d(loss)/d(output): a negative one at a unit clamped low asks for a larger x, which can
        # bring it back; a positive one there would push it further down, so it stays blocked.
        wrong_way = (x <= ctx.lo) & (grad > 0)
        if ctx.hi is not None:
            wrong_way |= (x >= ctx.hi) & (grad < 0)
        redirected = grad.masked_fill(wrong_way, 0.0)
        shape = (-1,) + (1,) * (x.dim() - 1) if x.dim() > 1 else (1,)
        return torch.where(silent.view(shape), redirected, usual), None, None, None


def _bounds(module: nn.Module) -> tuple[float, float | None] | None:
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.ReLU):
        return 0.0, None
    return None


class Redirect:
    """What `redirected_relus` yields: how many modules it patched, a switch (`active`) for later steps, and how
    many unit outputs redirected a gradient since `fired` was last reset (so a loop can stop when none do)."""

    def __init__(self) -> None:
        self.count = 0
        self.active = True
        self.fired = 0
        self.thread = threading.get_ident()  # the thread whose forward passes it redirects


@contextmanager
def redirected_relus(model: nn.Module) -> Iterator[Redirect]:
    """Within the block, the model's ReLU/ReLU6 modules redirect dead gradients while `active` is set."""
    state = Redirect()
    patched: list[tuple[nn.Module, bool, torch.utils.hooks.RemovableHandle]] = []
    try:
        for module in model.modules():
            bounds = _bounds(module)
            if bounds is None:
                continue
            inplace = getattr(module, "inplace", False)
            module.inplace = False  # the hook needs the unclamped input, which an in-place clamp overwrites

            # A forward hook, not a replaced forward: renders in other threads may share the model (the studio),
            # and each redirects only its own thread's passes.
            def hook(mod: nn.Module, args: tuple, out: Tensor, lo: float = bounds[0], hi: float | None = bounds[1]):
                x = args[0]
                mine = state.active and x.requires_grad and threading.get_ident() == state.thread
                return _RedirectedClamp.apply(x, lo, hi, state) if mine else out

            patched.append((module, inplace, module.register_forward_hook(hook)))
        state.count = len(patched)
        yield state
    finally:
        for module, inplace, handle in patched:
            handle.remove()
            module.inplace = inplace
