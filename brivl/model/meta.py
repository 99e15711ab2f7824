"""Build modules with parameters on the meta device, then fill them by taking loaded tensors over.

Random initialisation of weights that a checkpoint overwrites anyway is most of the cost of building
a model (brivl-lite: 96M word-embedding weights, drawn twice by torch and transformers). Inside
`parameters_on_meta()` every `nn.Parameter` a module registers is moved to the meta device, so the
initialisers run on shapes only; buffers are created as usual, which keeps the non-persistent ones
(BERT's position_ids, the MSPP boxes, normalisation constants) right although no file holds them.
`assign_state` then checks the state against the model and hands its tensors to the model as the
parameters and buffers themselves, without copying.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import chain

from torch import Tensor, nn

from ..checkpoint import CheckpointError, check_state_dict

_local = threading.local()  # .depth: how deep this thread is inside parameters_on_meta
_patch_lock = threading.Lock()
_patch_users = 0  # threads inside parameters_on_meta; the patch is installed while there are any
_original_register = nn.Module.register_parameter  # what the patch calls, set when it is installed


def _register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    """nn.Module.register_parameter, moving the parameter to meta in threads inside parameters_on_meta."""
    if getattr(_local, "depth", 0) and type(param) is nn.Parameter and not param.is_meta:
        param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    _original_register(module, name, param)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside, modules built in this thread get meta parameters (no memory, no random values); buffers stay real."""
    global _patch_users, _original_register
    # The patch is process-wide (as accelerate's init_empty_weights), but only threads that entered
    # this context see meta parameters; whatever register_parameter was before is put back after.
    with _patch_lock:
        if _patch_users == 0:
            _original_register = nn.Module.register_parameter
            nn.Module.register_parameter = _register_on_meta
        _patch_users += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                nn.Module.register_parameter = _original_register


def shares_parameters(model: nn.Module) -> bool:
    """Whether one parameter sits under two names (tied weights), which assigning tensors would untie."""
    named = list(model.named_parameters(remove_duplicate=False))
    return len({id(p) for _, p in named}) != len(named)


def assign_state(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load state into a model built under parameters_on_meta, taking its tensors over.

    Each tensor is cast to the dtype the model declares for it first (heads are stored in float16),
    as load_state_dict's copy would; errors name `source` and every missing, unexpected, mis-shaped key.
    """
    check_state_dict(model, state, source)
    expected = model.state_dict()
    fitted = {k: v.to(dtype=expected[k].dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(fitted, strict=True, assign=True)
    left = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:  # e.g. a buffer copied from a parameter while building (none today): fail here, not at first use
        raise CheckpointError(f"{source} left {len(left)} tensor(s) without values: {', '.join(left[:10])}")

