"""brivl: pre-train, load, probe and see inside BriVL-family two-tower vision-language models.

The core floor: model, checkpoints, hub, packaged backbones (lite/), backends, train, eval, errors and the `brivl`
entry point. It imports only third-party packages, never viz, recipes or app (the floors above it); DeepSpeed and
open_clip load only inside the functions that need them (the [train] and [openclip] extras).
"""
from .config import BriVLConfig, preset
from .hub import load
from .model.brivl import BriVL
from .twotower import TwoTower

__all__ = ["BriVL", "BriVLConfig", "TwoTower", "load", "preset"]
__version__ = "0.1.0"
