"""Nested training state (optimizer, RNG) as safetensors + JSON: no pickle written, none executed on load."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import CheckpointError, atomic_write_bytes, load_safetensors, save_safetensors

_TENSOR, _LIVE, _TUPLE = "__tensor__", "__live__", "__tuple__"


def flatten(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON skeleton and named tensors.

    Plain values and containers go to the skeleton; objects of other types (a loss scaler, an enum)
    become a placeholder that `unflatten` fills from the live state it is given.
    """
    tensors: dict[str, Tensor] = {}

    def walk(o: Any) -> Any:
        if isinstance(o, Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = o.detach().cpu().contiguous()
            return {_TENSOR: name}
        if isinstance(o, Mapping):
            return {"__dict__": [[walk(k), walk(v)] for k, v in o.items()]}
        if isinstance(o, tuple) and not hasattr(o, "_fields"):
            return {_TUPLE: [walk(v) for v in o]}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        return {_LIVE: type(o).__name__}

    return walk(obj), tensors


def unflatten(skeleton: Any, tensors: Mapping[str, Tensor], live: Any, where: str = "state") -> Any:
    """Rebuild what `flatten` split, taking placeholders from `live` (the same structure in the running process)."""
    if isinstance(skeleton, dict) and _TENSOR in skeleton:
        t = tensors[skeleton[_TENSOR]]
        if isinstance(live, Tensor):
            if tuple(live.shape) != tuple(t.shape):
                raise CheckpointError(f"{where}: saved shape {tuple(t.shape)} vs running {tuple(live.shape)}")
            return t.to(device=live.device, dtype=live.dtype)
        return t
    if isinstance(skeleton, dict) and _LIVE in skeleton:
        return live
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        out = {}
        for k_sk, v_sk in skeleton["__dict__"]:
            key = unflatten(k_sk, tensors, None, where)
            sub = live.get(key) if isinstance(live, Mapping) else None
            out[key] = unflatten(v_sk, tensors, sub, f"{where}.{key}")
        return out
    if isinstance(skeleton, dict) and _TUPLE in skeleton:
        lv = live if isinstance(live, tuple) else [None] * len(skeleton[_TUPLE])
        return tuple(unflatten(s, tensors, l, f"{where}[{i}]") for i, (s, l) in enumerate(zip(skeleton[_TUPLE], lv)))
    if isinstance(skeleton, list):
        lv = live if isinstance(live, list) and len(live) == len(skeleton) else [None] * len(skeleton)
        return [unflatten(s, tensors, l, f"{where}[{i}]") for i, (s, l) in enumerate(zip(skeleton, lv))]
    return skeleton


def save_nested(obj: Any, stem: str | Path) -> None:
    """Write obj as STEM.safetensors + STEM.json, each atomically."""
    stem = Path(stem)
    skeleton, tensors = flatten(obj)
    save_safetensors(tensors, stem.with_suffix(".safetensors"))
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(skeleton).encode())


def load_nested(stem: str | Path, live: Any) -> Any:
    """Read what save_nested wrote, shaped like `live`."""
    stem = Path(stem)
    try:
        skeleton = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{stem}.json: unreadable ({e})") from None
    tensors = load_safetensors(stem.with_suffix(".safetensors"))
    return unflatten(skeleton, tensors, live, stem.name)


def rng_state() -> dict[str, Any]:
    """The torch RNG states of this process (CPU, and CUDA when present)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what rng_state returned."""
    torch.set_rng_state(state["cpu"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
