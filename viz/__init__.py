"""brivl.viz (the folder viz/; `from brivl import viz`): model-agnostic interpretability for TwoTower models (network and neuron visualisation, objectives).

The floor above the core: may import brivl (its public modules), never recipes or app. Talks to a model only
through the `brivl.TwoTower` protocol and its sub-protocols (brivl.twotower); the core never imports `brivl.viz`
(`import brivl` leaves it unread).

The package file imports nothing heavy (PEP 562): each name below loads its module on first use, so `brivl --help`
reads viz's parser (viz.cli) without torch. No module is named like a function it exports (render_loop holds
`render`, vqgan_inversion holds `vqgan_imagine`): importing a submodule binds its name on the package.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import attribution, compare, figures, objectives, param, transforms, vqgan
    from .network import imagine, neuron
    from .objectives import Objective
    from .render_loop import Render, RenderDivergedError, render
    from .vqgan import VQGAN, load_vqgan
    from .vqgan_inversion import VQGANRender, vqgan_imagine

_MODULES = ("attribution", "compare", "figures", "objectives", "param", "transforms", "vqgan")
# A public name that is not a module, and the module it lives in.
_NAMES = {"imagine": ".network", "neuron": ".network", "Objective": ".objectives", "Render": ".render_loop",
          "RenderDivergedError": ".render_loop", "render": ".render_loop", "VQGAN": ".vqgan",
          "load_vqgan": ".vqgan", "VQGANRender": ".vqgan_inversion", "vqgan_imagine": ".vqgan_inversion"}
__all__ = ["VQGAN", "Objective", "Render", "RenderDivergedError", "VQGANRender", "attribution", "compare", "figures",
           "imagine", "load_vqgan", "neuron", "objectives", "param", "render", "transforms", "vqgan", "vqgan_imagine"]


def __getattr__(name: str):
    """A public name, its module imported on first use (then cached as a plain attribute)."""
    if name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
