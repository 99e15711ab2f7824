"""brivl.viz (the folder viz/; `from brivl import viz`): model-agnostic interpretability for TwoTower models (network and neuron visualisation, objectives).

The floor above the core: may import brivl (its public modules), never recipes or app. Talks to a model only
through the `brivl.TwoTower` protocol and its sub-protocols (brivl.twotower); the core never imports `brivl.viz`
(`import brivl` leaves it unread).
"""
from . import attribution, compare, figures, objectives, param, transforms, vqgan
from .network import imagine, neuron
from .objectives import Objective
from .render import Render, RenderDivergedError, render
from .vqgan import VQGAN, load_vqgan
from .vqgan_imagine import VQGANRender, vqgan_imagine

__all__ = ["VQGAN", "Objective", "Render", "RenderDivergedError", "VQGANRender", "attribution", "compare", "figures",
           "imagine", "load_vqgan", "neuron", "objectives", "param", "render", "transforms", "vqgan", "vqgan_imagine"]
