"""The BriVL towers and the model that joins them."""
from .brivl import BriVL

__all__ = ["BriVL"]
