"""app: the Imagine studio, a Gradio Blocks app over the public functions of `brivl` and `viz` (`brivl studio`)."""
from .studio import build_studio, launch

__all__ = ["build_studio", "launch"]
