"""viz: model-agnostic interpretability for TwoTower models (network and neuron visualisation, objectives).

Talks to a model only through the `brivl.TwoTower` protocol; `brivl` never imports `viz`.
"""
from . import attribution, figures, objectives, param, transforms
from .network import imagine, neuron
from .objectives import Objective
from .render import Render, RenderDivergedError, render

__all__ = ["Objective", "Render", "RenderDivergedError", "attribution", "figures", "imagine", "neuron", "objectives",
           "param", "render", "transforms"]
