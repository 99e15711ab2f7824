"""brivl: pre-train, load, probe and see inside BriVL-family two-tower vision-language models."""
from .config import BriVLConfig, preset
from .hub import load
from .model.brivl import BriVL
from .twotower import TwoTower

__all__ = ["BriVL", "BriVLConfig", "TwoTower", "load", "preset"]
__version__ = "0.1.0"
