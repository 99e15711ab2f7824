"""brivl: pre-train, load, probe and see inside BriVL-family two-tower vision-language models.

The core floor: model, checkpoints, hub, packaged backbones (lite/), backends, train, eval, errors and the `brivl`
entry point. It imports only third-party packages, never viz, recipes or app (the floors above it); DeepSpeed and
open_clip load only inside the functions that need them (the [train] and [openclip] extras).

The package file itself imports nothing heavy (PEP 562): `brivl.load` and the classes below load torch on first
use, so `brivl --help` and the parser (brivl.cli) start without it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import BriVLConfig, preset
    from .hub import load
    from .model.brivl import BriVL
    from .twotower import TwoTower

# The public names and the module each lives in.
_PUBLIC = {"BriVL": ".model.brivl", "BriVLConfig": ".config", "TwoTower": ".twotower", "load": ".hub",
           "preset": ".config"}
__all__ = ["BriVL", "BriVLConfig", "TwoTower", "load", "preset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """A public name, its module imported on first use (then cached as a plain attribute)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'brivl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
