"""Atomic file writes (a temporary file in the same folder, fsync, rename), importable without torch."""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError


def write_atomically(path: str | Path, write: Callable[[Path], None],
                     errors: tuple[type[BaseException], ...] = (OSError,)) -> Path:
    """Call write(tmp) on a temporary file beside path, then rename it onto path; `errors` become a CheckpointError."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half
    except errors as e:
        _discard(tmp)
        raise CheckpointError(f"{path}: could not write ({_write_failure(e)}); the previous file, if any, "
                              f"is unchanged") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to path through a temporary file and a rename."""
    return write_atomically(Path(path), lambda tmp: tmp.write_bytes(data))


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def _write_failure(e: BaseException) -> str:
    """A short reason for a failed write; a full disk is said plainly (safetensors wraps it in its own error)."""
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or "StorageFull" in str(e):
        return "no space left on the disk"
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
