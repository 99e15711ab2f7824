"""Reading and writing weights: safetensors first, official .pth through weights_only loading, atomic writes."""
from __future__ import annotations

import pickle
import re
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .atomic import atomic_write_bytes, write_atomically  # noqa: F401 - atomic_write_bytes re-exported
from .errors import CheckpointError  # noqa: F401 - re-exported: the names callers know
from .pickle_scan import scan_torch_file

WEIGHTS_NAME = "model.safetensors"
TOWER_PREFIXES = ("imgencoder.", "textencoder.")


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    return write_atomically(path, write, errors=(OSError, SafetensorError))


def save_safetensors(state: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a state dict as safetensors, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return _atomic(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Load a safetensors file, turning a damaged file into a CheckpointError that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged?): {e}") from None


def load_torch_pickle(path: str | Path) -> object:
    """Load a .pth/.pt file with torch.load(weights_only=True) after the opcode scan: tensors only, no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        scan_torch_file(path)  # weights_only still admits bytearray(n) and lying storage sizes
    except CheckpointError:
        _refuse_tar(path)
        raise
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds objects other than tensors and plain containers, "
            f"which could run code ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, AssertionError, TypeError, ValueError) as e:
        _refuse_tar(path)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or damaged?): {first}") from None


def _refuse_tar(path: Path) -> None:
    """A download packed as a tar archive, with the checkpoint inside: say so instead of 'damaged'."""
    if tarfile.is_tarfile(path):
        raise CheckpointError(f"{path}: a tar archive of files, not a torch checkpoint: unpack it "
                              f"(tar -xf) and convert the .pth inside") from None


def official_state_dict(raw: object, source: str = "checkpoint") -> dict[str, Tensor]:
    """The inference weights of an official BriVL checkpoint: tower keys of `learnable`, momentum copies dropped."""
    state = raw.get("learnable", raw) if isinstance(raw, Mapping) else None
    if isinstance(state, Mapping) and "state_dict" in state and "learnable" not in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a dict with a 'learnable' state dict, got {type(raw).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from a DistributedDataParallel wrapper
        if not key.startswith(TOWER_PREFIXES):
            continue  # imgencoder_mom.*, textencoder_mom.*, queues: training state, not inference weights
        if key.endswith("embeddings.position_ids"):
            continue  # a non-persistent buffer in current transformers
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value
    if not out:
        keys = ", ".join(list(state)[:5])
        raise CheckpointError(f"{source}: no 'imgencoder.*' or 'textencoder.*' weights found (keys start: {keys})")
    return out


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raise a CheckpointError naming every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or misshaped):
        return
    parts = [f"{source} does not fit the model"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = "\n    ".join(keys[:40]) + (f"\n    ... and {len(keys) - 40} more" if len(keys) > 40 else "")
            parts.append(f"  {len(keys)} {label} key(s):\n    {shown}")
    raise CheckpointError("\n".join(parts))


def load_into(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load state into model after checking names and shapes (the model is untouched on error)."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)


def count_layers(state: Mapping[str, Tensor], pattern: str) -> int:
    """Number of distinct indices N in keys matching a regex with one group, e.g. r'encoder\\.layer\\.(\\d+)\\.'."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.search(k))})
