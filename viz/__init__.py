"""viz: model-agnostic interpretability for TwoTower models (network and neuron visualisation, objectives).

Talks to a model only through the `brivl.TwoTower` protocol; `brivl` never imports `viz`.
"""
from . import attribution, figures, objectives, param, transforms, vqgan
from .network import imagine, neuron
from .objectives import Objective
from .render import Render, RenderDivergedError, render
from .vqgan import VQGAN, load_vqgan
from .vqgan_imagine import VQGANRender, vqgan_imagine

__all__ = ["VQGAN", "Objective", "Render", "RenderDivergedError", "VQGANRender", "attribution", "figures", "imagine",
           "load_vqgan", "neuron", "objectives", "param", "render", "transforms", "vqgan", "vqgan_imagine"]
