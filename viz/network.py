"""Network and neuron visualisation, as in the BriVL paper's Fig. 2: what the frozen model "imagines" for a text.

Network visualisation (Fig. 2a-c) starts from a noise image and maximises the cosine between its embedding and a
text's embedding. Neuron visualisation (Fig. 2d) maximises one channel of the CNN's last layer before pooling
("LLP-108") while the text match keeps the image on a semantic subject ("forest", "mountains").
"""
from __future__ import annotations

from collections.abc import Sequence

from brivl.twotower import TwoTower

from . import objectives as O
from .param import ParamKind
from .render_loop import ProgressCallback, Render, TransformSpec, render


# Defaults for the best picture per second on a CPU (brivl-lite, 2 cores; bench/imagine_accuracy.py, 40 concepts):
# 128 steps at 160 px are recognised by an independent ImageNet judge (top-5) for 72.5% of English and 77.5% of
# Chinese prompts, 18-22 s a prompt with 8 rendering together; 64 steps reached 6 of 8 on an 8-concept subset (with
# the classifier's own class targets), and the old default, 256 steps at 224 px, took 4 min 41 s for one prompt. The CNN runs at its own input size whatever the
# render's (the model resizes), so a smaller render saves only the parameterisation's and transforms' share, but
# its fewer pixels carry fewer high-frequency textures.
IMAGINE_STEPS = 128
IMAGINE_SIZE = 160


def imagine_size(model: TwoTower) -> int:
    """The default render side: IMAGINE_SIZE, or the model's input side when that is smaller."""
    return min(int(model.image_size), IMAGINE_SIZE)


def _priors(objective: O.Objective, tv: float, l2: float, diversity: float) -> O.Objective:
    """objective with the optional image priors subtracted and a diversity term added (zero weights skip them)."""
    if tv:
        objective = objective - tv * O.total_variation()
    if l2:
        objective = objective - l2 * O.l2()
    if diversity:
        objective = objective + diversity * O.diversity()
    return objective


def imagine(
    model: TwoTower,
    text: str | Sequence[str],
    *,
    steps: int = IMAGINE_STEPS,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    param: ParamKind = "fft",
    decorrelate: bool = True,
    lr: float = 0.05,
    batch: int | None = None,
    transforms: TransformSpec = "standard",
    tv: float = 0.0,
    l2: float = 0.0,
    diversity: float = 0.0,
    copies: int = 1,
    callback: ProgressCallback | None = None,
    every: int | None = None,
    progress: bool | None = None,
) -> Render:
    """Images whose embedding matches a text: one row per text for a list, `batch` rows for one text.

    `tv` and `l2` weigh smoothness and grey-level penalties, `diversity` pushes a batch of one text apart.
    `size` defaults to `imagine_size(model)` (160 px, or the model's input side when smaller).
    """
    objective = _priors(O.text_match(text), tv, l2, diversity)
    return render(model, objective, steps=steps, size=size or imagine_size(model), batch=batch, lr=lr, seed=seed,
                  param=param, decorrelate=decorrelate, transforms=transforms, callback=callback, every=every,
                  progress=progress, copies=copies)


def neuron(
    model: TwoTower,
    layer: str = "llp",
    channel: int = 108,
    text: str | Sequence[str] | None = "forest",
    *,
    text_weight: float = 1.0,
    steps: int = IMAGINE_STEPS,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    param: ParamKind = "fft",
    decorrelate: bool = True,
    lr: float = 0.05,
    batch: int | None = None,
    transforms: TransformSpec = "standard",
    tv: float = 0.0,
    l2: float = 0.0,
    copies: int = 1,
    callback: ProgressCallback | None = None,
    every: int | None = None,
    progress: bool | None = None,
) -> Render:
    """Images that maximise channel `channel` of `layer`, under the semantic constraint of a text (None: none)."""
    # The paper adds the neuron's value to the image-text matching objective with no weight given; text_weight
    # lets a model whose activations are far larger than a cosine (at most 1) keep the text in play.
    objective = O.channel(layer, channel)
    if text is not None:
        objective = objective + text_weight * O.text_match(text)
    objective = _priors(objective, tv, l2, 0.0)
    return render(model, objective, steps=steps, size=size or imagine_size(model), batch=batch, lr=lr, seed=seed,
                  param=param, decorrelate=decorrelate, transforms=transforms, callback=callback, every=every,
                  progress=progress, copies=copies)
