"""Where brivl keeps what it builds or measures once (packaged backbones, phrase indexes, model descriptions).

Imports nothing from brivl and no torch (the parser-side modules read it too).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where brivl keeps what it builds from packages and measures once: $BRIVL_CACHE, else ~/.cache/brivl."""
    return Path(os.environ.get("BRIVL_CACHE") or Path.home() / ".cache" / "brivl")
