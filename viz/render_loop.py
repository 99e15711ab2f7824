"""The optimisation loop: Adam on a seeded image parameterisation until an objective is maximised."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from brivl.errors import DivergedError, UserInputError
from brivl.frozen import frozen
from brivl.progress import bar as progress_bar
from brivl.progress import shown
from brivl.twotower import TwoTower

from . import transforms as T
from .objectives import Context, Objective, capture_layers
from .param import Constrained, ImageParam, ParamKind, Sampled, image
from .relu_redirect import Redirect, redirected_relus

ProgressCallback = Callable[[int, Tensor], None]
TransformSpec = str | T.Compose | T.Schedule | Sequence[T.Transform] | None
# What the loop optimises with, and how its learning rate moves: factories, so that the loop owns the instances.
OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

# The transforms draw from their own generator, seeded from `seed` with a fixed offset: the image's initial
# noise and the transforms' draws then stay independent streams while one seed still fixes both.
_TRANSFORM_SEED_OFFSET = 0x5EED


REDIRECT_STEPS = 32  # at most this many steps with redirected ReLU gradients, at the start of a render


class Render(NamedTuple):
    """What `render` returns: final images [n,3,H,W] in [0,1] and the objective per step and row [steps, n]."""

    images: Tensor
    history: Tensor


class RenderDivergedError(DivergedError):
    """The images, the objective or its gradient became NaN/Inf; `step` says at which step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _device(model: TwoTower) -> torch.device:
    """The device of the model's weights (the CPU for a model without parameters)."""
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def _transforms(spec: TransformSpec, size: int) -> T.Compose | T.Schedule:
    """A Compose (or a step-dependent Schedule) from "standard", None, a Compose, a Schedule or a list."""
    if isinstance(spec, T.Schedule):
        return spec
    if spec is None:
        return T.Compose([])
    if isinstance(spec, str):
        if spec != "standard":
            raise UserInputError(f"unknown transforms {spec!r}; use 'standard', None, or a list of transforms")
        return T.standard(size)
    return spec if isinstance(spec, T.Compose) else T.Compose(spec)


def _batch_size(objective: Objective, batch: int | None) -> int:
    """The batch size: as given, else what the objective needs (e.g. its number of prompts), else 1."""
    if batch is not None and objective.rows is not None and batch != objective.rows:
        raise UserInputError(f"batch={batch} but the objective {objective.name} has {objective.rows} rows")
    return batch or objective.rows or 1


def _check_numbers(steps: int, lr: float, copies: int) -> None:
    """Refuse a step count, learning rate or copy count the loop cannot use."""
    if steps < 1:
        raise UserInputError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise UserInputError(f"lr must be > 0, got {lr}")
    if copies < 1:
        raise UserInputError(f"copies must be >= 1, got {copies}")


def _check_finite(t: Tensor, what: str, step: int, steps: int, lr: float) -> None:
    """Raise RenderDivergedError naming the step if t holds NaN or Inf."""
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist() if t.dim() else []
        rows = f" (batch rows {bad})" if bad else ""
        raise RenderDivergedError(
            f"render diverged at step {step} of {steps}: {what} is NaN or Inf{rows}; "
            f"try a lower lr (now {lr:g}) or check that the model's encode_image is finite", step)


def render(
    model: TwoTower,
    objective: Objective,
    *,
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    batch: int | None = None,
    lr: float = 0.05,
    seed: int = 0,
    param: ParamKind = "fft",
    decorrelate: bool = True,
    transforms: TransformSpec = "standard",
    callback: ProgressCallback | None = None,
    every: int | None = None,
    progress: bool | None = None,
    init: ImageParam | None = None,
    copies: int = 1,
    redirect_relu: bool = True,
    optimizer: OptimizerFactory | None = None,
    scheduler: SchedulerFactory | None = None,
) -> Render:
    """Maximise objective over a seeded batch of images; the model stays frozen and unchanged.

    `size` defaults to the model's input side; `batch` to the objective's number of rows (one per prompt),
    else init's batch, else 1.
    `callback(step, images)` receives the images after `step` updates at step 0, every `every` steps
    (default a tenth of them) and at the end. `progress` as in brivl.progress.bar (None: a bar on a terminal
    only; True: also a line every few seconds in a log).
    `init` replaces the seeded parameterisation with one of your own (param, decorrelate and size are ignored).
    `copies` differently transformed copies of each image are encoded every step and the objective averaged
    over them: a smoother gradient, fewer adversarial textures, `copies` times the compute per step.
    `redirect_relu` lets gradients through ReLU/ReLU6 units for images that would otherwise get none
    (viz.relu_redirect) at the start, until a step finds no such image (at most REDIRECT_STEPS steps), so a
    render can start where the units it needs are dead, e.g. from a flat image.
    `optimizer(params)` replaces the default `Adam(params, lr)`; `scheduler(optimizer)` (a torch LR scheduler,
    stepped after every update) moves its learning rate, e.g. a cosine decay.
    """
    _check_numbers(steps, lr, copies)
    init = _initial_images(model, objective, init, batch, size, param, decorrelate, seed)
    params = [p for p in init.parameters() if p.requires_grad]
    tf = _transforms(transforms, min(init.height, init.width))
    g = torch.Generator().manual_seed(seed + _TRANSFORM_SEED_OFFSET)
    every = max(1, steps // 10) if every is None else every
    if every < 1:
        raise UserInputError(f"every must be >= 1, got {every}")
    progress = shown(progress)  # None: a bar on a terminal or in a notebook; True: lines in a log too
    opt = torch.optim.Adam(params, lr=lr) if optimizer is None else optimizer(params)
    lr_schedule = scheduler(opt) if scheduler is not None else None
    history: list[Tensor] = []

    # Eval mode so BatchNorm uses its running statistics and never updates them; restored afterwards.
    with frozen(model):
        redirect = redirected_relus(model) if redirect_relu and isinstance(model, nn.Module) else nullcontext()
        with redirect as redirecting, capture_layers(model, objective.layers, objective.hooks) as cap, \
                progress_bar(total=steps, progress=progress, desc=objective.name[:40], unit="step") as bar:
            for step in range(steps):
                _switch_redirect(redirecting, step)
                images = init.sample(g) if isinstance(init, Sampled) else init()
                _check_finite(images, "the image", step, steps, lr)
                if callback is not None and step % every == 0:
                    callback(step, images.detach().clone())  # a copy: the callback may edit it freely
                views = _views(tf, images, copies, g, step, steps)
                value = objective(Context(model, images, views, cap))
                _set_gradients(value, objective.name, params, step, steps, lr)
                _update(opt, lr_schedule, init)
                history.append(value.detach().cpu())
                if progress:
                    bar.update(1)
                    bar.set_postfix(objective=f"{history[-1].mean().item():.4g}", refresh=False)
        with torch.no_grad():
            final = init()
        _check_finite(final, "the image", steps, steps, lr)
        if callback is not None:
            callback(steps, final)
    return Render(final, torch.stack(history))


def _switch_redirect(redirecting: Redirect | None, step: int) -> None:
    """Redirect ReLU gradients this step or not: only the start needs it (dead units come alive or never will), and
    only while it still finds an image with no gradient through some unit. It stops at the first step that found
    none (from noise, at once; from a flat grey start, after a step or two): its backward costs a third more."""
    if redirecting is not None:
        redirecting.active = step < REDIRECT_STEPS and (step == 0 or redirecting.fired > 0)
        redirecting.fired = 0


def _views(tf: T.Compose | T.Schedule, images: Tensor, copies: int, g: torch.Generator, step: int, steps: int
           ) -> Tensor:
    """What the model sees this step: `copies` transformed copies of the images (copy-major)."""
    step_tf = tf.at(step, steps) if isinstance(tf, T.Schedule) else tf
    return step_tf(images.repeat(copies, 1, 1, 1) if copies > 1 else images, g)


def _update(opt: torch.optim.Optimizer, lr_schedule: torch.optim.lr_scheduler.LRScheduler | None,
            init: ImageParam) -> None:
    """One optimiser step, then the learning-rate schedule's and the parameterisation's constraint's."""
    opt.step()
    if lr_schedule is not None:
        lr_schedule.step()
    if isinstance(init, Constrained):
        init.after_step()


def _initial_images(model: TwoTower, objective: Objective, init: ImageParam | None, batch: int | None,
                    size: int | tuple[int, int] | None, param: ParamKind, decorrelate: bool, seed: int) -> ImageParam:
    """The parameterisation to optimise: init checked against the batch, else a seeded one of the model's size."""
    n = _batch_size(objective, init.n if batch is None and init is not None else batch)
    if init is None:
        side = model.image_size if size is None else size
        return image(n, side, param, decorrelate, seed=seed, device=_device(model))
    if init.n != n:
        raise UserInputError(f"init holds {init.n} images but the batch has {n}")
    return init


def _set_gradients(value: Tensor, name: str, params: list[Tensor], step: int, steps: int, lr: float) -> None:
    """Put d(-value)/d(param) into each image parameter's .grad, refusing NaN/Inf and an image-free objective."""
    _check_finite(value.detach(), f"the objective {name}", step, steps, lr)
    if not value.requires_grad:
        raise UserInputError(f"the objective {name} does not depend on the image")
    # Gradients for the image only: the model's weights get none, so the model is left untouched.
    grads = torch.autograd.grad(-value.sum(), params, allow_unused=True)
    if any(gr is None for gr in grads):
        raise UserInputError(f"the objective {name} does not depend on the image")
    for p, gr in zip(params, grads, strict=True):
        _check_finite(gr, "the gradient", step, steps, lr)
        p.grad = gr
