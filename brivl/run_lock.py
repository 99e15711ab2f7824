"""One training per output folder: a lock file naming its owner (pid, host), held with flock while the run lives."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path

from .errors import OutputBusyError

LOCK_NAME = ".brivl-train.lock"
_held: dict[str, int] = {}  # lock path -> open descriptor, for the locks this process holds


def _owner(fd: int) -> dict:
    """The owner record in an open lock file ({} when empty or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        data = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def acquire(folder: str | Path) -> Path:
    """Take the output folder's lock; OutputBusyError if a living run holds it, a warning if a dead one left it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _held:  # an earlier run in this process (e.g. a Trainer before --resume): ours to retake
        release(folder)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    host = socket.gethostname()
    try:
        # The kernel drops an flock when its process dies, so a crash never leaves the folder locked.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _owner(fd)
        os.close(fd)
        raise OutputBusyError(f"{folder} is in use by another training (pid {owner.get('pid', '?')} on "
                              f"{owner.get('host', '?')}, started {owner.get('started', '?')}); wait for it to "
                              f"finish or choose another output folder") from None
    owner = _owner(fd)
    if owner.get("pid") is not None and owner.get("pid") != os.getpid():
        if owner.get("host") != host:  # another machine's run, maybe on a file system where flock does not reach
            os.close(fd)
            raise OutputBusyError(f"{folder} is locked by pid {owner.get('pid')} on {owner.get('host')}, which "
                                  f"cannot be checked from {host}; if that run is over, delete {path}")
        # Same host and the flock was free: the owner is dead (a live pid here is a reused id, not the owner).
        warnings.warn(f"{folder}: taking over the lock of a training that is no longer running "
                      f"(pid {owner.get('pid')} on {host})", stacklevel=2)
    record = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    _held[key] = fd
    return path


def release(folder: str | Path) -> None:
    """Give up the lock this process holds on folder (no-op if it holds none)."""
    path = Path(folder) / LOCK_NAME
    fd = _held.pop(str(path.resolve()), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)  # an empty lock file: the next run starts without a take-over warning
    finally:
        os.close(fd)
