"""Objectives to maximise: functions of the images, the model's embeddings and hooked activations.

An `Objective` maps a `Context` (one step's images, their transformed views, the model) to one value per
image, a tensor [n]. Per-row values let one batch carry a different goal in each row (a different prompt,
say) and keep each row's gradient independent of the batch size; the render loop maximises their sum.
Objectives compose: `a + b`, `a - b`, `2 * a`, `a / 4`, `-a`, `sum([...])`. Penalties (`l2`,
`total_variation`) return a magnitude, so they are subtracted: `text_match("forest") - 0.1 * l2()`.

Models are reached only through the TwoTower protocol: `encode_text`, `encode_image` and `feature_layers()`.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brivl.errors import UnknownNameError, UserInputError
from brivl.twotower import TwoTower


class _Capture:
    """Forward hooks on named layers that keep their outputs, but only while `active` is set."""

    def __init__(self) -> None:
        self.active = False  # target images encoded by an objective must not overwrite the step's activations
        self.outputs: dict[str, Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def hook(self, name: str) -> Callable[[nn.Module, tuple, object], None]:
        """A forward hook that stores the layer's output under name."""
        def store(module: nn.Module, inputs: tuple, output: object) -> None:
            if self.active:
                # Some layers return tuples (attention blocks); the first element is the feature tensor.
                self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output
        return store


# An objective's own forward hooks beyond named layer outputs: given the model and the step's capture, register
# hooks that write into capture.outputs while capture.active, and return their handles (removed after the render).
HookInstaller = Callable[[TwoTower, _Capture], list[torch.utils.hooks.RemovableHandle]]


@contextmanager
def capture_layers(model: TwoTower, layers: Sequence[str], hooks: Sequence[HookInstaller] = ()) -> Iterator[_Capture]:
    """Hook the named layers of model.feature_layers() (and install `hooks`) for the block; always removed."""
    cap = _Capture()
    try:
        for install in hooks:
            cap.handles += install(model, cap)
        if layers:
            available = model.feature_layers()
            missing = [name for name in layers if name not in available]
            if missing:
                raise UnknownNameError(f"layer(s) {missing} not in the model's feature_layers(); "
                                       f"available: {sorted(available)}")
            cap.handles += [available[name].register_forward_hook(cap.hook(name)) for name in layers]
        yield cap
    finally:
        for h in cap.handles:
            h.remove()


class Context:
    """One step's inputs to the objectives: images [n,3,H,W] in [0,1], their transformed views, the model.

    `views` may hold several transformed copies of each image ([copies * n, ...], copy-major: row j * n + i is
    copy j of image i); objectives on the views then average their value over an image's copies.
    """

    def __init__(self, model: TwoTower, images: Tensor, views: Tensor | None = None, capture: _Capture | None = None):
        self.model = model
        self.images = images
        self.views = images if views is None else views
        if self.views.shape[0] % images.shape[0]:
            raise UserInputError(f"{self.views.shape[0]} views for {images.shape[0]} images: give a whole number per image")
        self.copies = self.views.shape[0] // images.shape[0]
        self.capture = capture if capture is not None else _Capture()
        self._embeddings: Tensor | None = None

    @property
    def n(self) -> int:
        """Number of images in the batch."""
        return self.images.shape[0]

    def image_embeddings(self) -> Tensor:
        """Embeddings [n, d] of the views, computed once per step (this forward pass also fills the hooks)."""
        if self._embeddings is None:
            self.capture.active = True
            try:
                self._embeddings = self.model.encode_image(self.views)
            finally:
                self.capture.active = False
        return self._embeddings

    def activation(self, layer: str) -> Tensor:
        """The output of a hooked layer for the views (runs the forward pass if it has not run yet)."""
        self.image_embeddings()
        if layer not in self.capture.outputs:
            raise UnknownNameError(f"layer {layer!r} was not hooked or did not run in encode_image")
        return self.capture.outputs[layer]


def _merge_rows(a: int | None, b: int | None) -> int | None:
    """The batch size two objectives need together (None: any)."""
    if a is not None and b is not None and a != b:
        raise UserInputError(f"objectives disagree on the batch size: one has {a} rows, the other {b}")
    return a if a is not None else b


def _number(k: object) -> float:
    """k as a float if it is a real number, else raise TypeError (objectives scale by numbers only)."""
    if isinstance(k, numbers.Real) and not isinstance(k, bool):
        return float(k)
    raise TypeError(f"an objective can be scaled or shifted only by a number, not {type(k).__name__}")


class Objective:
    """A value per image [n] to maximise; composes with +, -, * and / by numbers, and unary minus."""

    def __init__(self, fn: Callable[[Context], Tensor], name: str, layers: Sequence[str] = (), rows: int | None = None,
                 hooks: Sequence[HookInstaller] = ()):
        self.fn = fn
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))  # ordered, without repeats
        self.rows = rows  # the batch size this objective needs, or None if it fits any
        self.hooks = tuple(dict.fromkeys(hooks))  # forward hooks of its own (e.g. BatchNorm statistics)

    def __call__(self, ctx: Context) -> Tensor:
        """The objective's value per image [n] (a scalar is broadcast to every row; values per view are averaged)."""
        value = self.fn(ctx)
        if value.dim() == 0:
            value = value.expand(ctx.n)
        if ctx.copies > 1 and value.shape == (ctx.n * ctx.copies,):
            value = value.view(ctx.copies, ctx.n).mean(dim=0)
        if value.shape != (ctx.n,):
            raise UserInputError(f"objective {self.name} returned shape {tuple(value.shape)}, expected ({ctx.n},)")
        return value

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _join(self, other: Objective, op: Callable[[Tensor, Tensor], Tensor], sym: str) -> Objective:
        return Objective(lambda ctx: op(self(ctx), other(ctx)), f"{self.name} {sym} {other.name}",
                         self.layers + other.layers, _merge_rows(self.rows, other.rows), self.hooks + other.hooks)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return self._join(other, torch.add, "+")
        k = _number(other)
        return Objective(lambda ctx: self(ctx) + k, f"{self.name} + {k:g}", self.layers, self.rows, self.hooks)

    def __radd__(self, other: float) -> Objective:
        # Python's sum() starts from 0; returning self keeps the name clean.
        return self if isinstance(other, numbers.Real) and other == 0 else self + other

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return self._join(other, torch.sub, "-")
        return self + (-_number(other))

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, other: float) -> Objective:
        k = _number(other)
        return Objective(lambda ctx: k * self(ctx), f"{k:g} * ({self.name})", self.layers, self.rows, self.hooks)

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Objective:
        k = _number(other)
        if k == 0:
            raise ZeroDivisionError(f"objective {self.name} divided by zero")
        return self * (1.0 / k)

    def __neg__(self) -> Objective:
        return Objective(lambda ctx: -self(ctx), f"-({self.name})", self.layers, self.rows, self.hooks)

    def on(self, rows: int | Sequence[int]) -> Objective:
        """This objective on the given batch rows only (zero elsewhere): one goal per row in a shared batch."""
        rows = [rows] if isinstance(rows, int) else list(rows)

        def fn(ctx: Context) -> Tensor:
            mask = torch.zeros(ctx.n, dtype=torch.bool, device=ctx.images.device)
            mask[rows] = True
            value = self(ctx)
            return torch.where(mask, value, torch.zeros_like(value))
        return Objective(fn, f"({self.name})[rows {rows}]", self.layers, self.rows, self.hooks)


def evaluate(objective: Objective, model: TwoTower, images: Tensor, views: Tensor | None = None) -> Tensor:
    """The objective's values [n] for images (and their views, default the images), with hooks set and removed."""
    with capture_layers(model, objective.layers, objective.hooks) as cap:
        return objective(Context(model, images, views, cap))


# --- matching in the joint embedding space --------------------------------------------------------------------

def _per_row(targets: Tensor, ctx: Context, what: str) -> Tensor:
    """Targets [1 or n, ...] for the step's views: one for all, or one per image repeated over its copies."""
    k, n = targets.shape[0], ctx.n
    if k not in (1, n):
        raise UserInputError(f"{what} has {k} targets for a batch of {n} images; give 1 or {n}")
    if k == 1 or ctx.copies == 1:
        return targets
    return targets.repeat(ctx.copies, *([1] * (targets.dim() - 1)))  # copy-major views: row j * n + i is image i


def _rowwise_cosine(ctx: Context, targets: Tensor, what: str) -> Tensor:
    """Cosine of each view's embedding to its image's target [n or 1, d]."""
    image_emb = ctx.image_embeddings()
    return F.cosine_similarity(image_emb, _per_row(targets, ctx, what).to(image_emb), dim=-1)


class _PerModel:
    """A one-slot cache of targets computed from the model (text embeddings), refreshed when the model changes."""

    def __init__(self, compute: Callable[[TwoTower], Tensor]):
        self.compute = compute
        self.model: TwoTower | None = None
        self.value: Tensor | None = None

    def __call__(self, model: TwoTower) -> Tensor:
        if self.model is not model or self.value is None:
            with torch.no_grad():  # targets are constants: no graph through the text tower
                self.value = self.compute(model).detach()
            self.model = model
        return self.value


def text_match(texts: str | Sequence[str]) -> Objective:
    """Cosine between each image's embedding and a text's embedding (one text for all, or one per row)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise UserInputError("text_match needs at least one text")
    targets = _PerModel(lambda model: model.encode_text(texts))
    name = f"text_match({texts[0]!r})" if len(texts) == 1 else f"text_match({texts!r})"
    return Objective(lambda ctx: _rowwise_cosine(ctx, targets(ctx.model), "text_match"),
                     name, rows=len(texts) if len(texts) > 1 else None)


def image_match(target: Tensor) -> Objective:
    """Cosine to target images [k,3,H,W] in [0,1] or target embeddings [k, d] (k = 1 or one per row)."""
    if target.dim() not in (2, 4):
        raise UserInputError(f"image_match takes images [k,3,H,W] or embeddings [k,d], got shape {tuple(target.shape)}")
    if target.dim() == 2:
        fixed = target.detach()
        targets = _PerModel(lambda model: fixed)
    else:
        targets = _PerModel(lambda model: model.encode_image(target))
    k = target.shape[0]
    return Objective(lambda ctx: _rowwise_cosine(ctx, targets(ctx.model), "image_match"),
                     f"image_match({k})", rows=k if k > 1 else None)


# --- hooked layers --------------------------------------------------------------------------------------------

def _channel_axis(act: Tensor, layer: str, c: int) -> None:
    """Raise a clear error if channel c does not exist in the activation of layer."""
    channels = act.shape[-1] if act.dim() == 3 else act.shape[1]
    if not 0 <= c < channels:
        raise IndexError(f"channel {c} out of range: layer {layer!r} has {channels} channels")


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel c of a hooked layer ([n,C,H,W] maps; [n,L,C] token and [n,C] layers too)."""
    def fn(ctx: Context) -> Tensor:
        act = ctx.activation(layer)
        _channel_axis(act, layer, c)
        if act.dim() == 4:
            return act[:, c].mean(dim=(-2, -1))
        if act.dim() == 3:  # transformer tokens, channels last
            return act[:, :, c].mean(dim=1)
        return act[:, c]
    return Objective(fn, f"channel({layer}:{c})", layers=[layer])


def neuron(layer: str, c: int, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel c at one position of a [n,C,H,W] layer (default the centre)."""
    def fn(ctx: Context) -> Tensor:
        act = ctx.activation(layer)
        if act.dim() != 4:
            raise UserInputError(f"neuron needs a [n, C, H, W] feature map; layer {layer!r} gives shape {tuple(act.shape)}")
        _channel_axis(act, layer, c)
        h, w = act.shape[-2:]
        return act[:, c, h // 2 if y is None else y, w // 2 if x is None else x]
    where = "centre" if x is None and y is None else f"x={x}, y={y}"
    return Objective(fn, f"neuron({layer}:{c}, {where})", layers=[layer])


def direction(vector: Tensor, layer: str | None = None) -> Objective:
    """Alignment with a direction: cosine in the joint space (layer None), or mean dot product per layer position."""
    unit = F.normalize(vector.detach().float().reshape(-1, vector.shape[-1]), dim=-1)  # [k, C]
    k = unit.shape[0]

    def fn(ctx: Context) -> Tensor:
        if layer is None:
            return _rowwise_cosine(ctx, unit, "direction")
        act = ctx.activation(layer)
        v = _per_row(unit, ctx, "direction").to(act)
        if act.dim() == 4:
            return (act * v[:, :, None, None]).sum(dim=1).mean(dim=(-2, -1))
        if act.dim() == 3:
            return (act * v[:, None, :]).sum(dim=-1).mean(dim=1)
        return (act * v).sum(dim=-1)
    return Objective(fn, f"direction({'embedding' if layer is None else layer})", layers=[layer] if layer else [],
                     rows=k if k > 1 else None)


def _mean_similarity_to_others(features: Tensor) -> Tensor:
    """For each row of unit vectors [n, m], the mean cosine to every other row ([n]; zeros when n = 1)."""
    n = features.shape[0]
    if n < 2:
        return features.sum(dim=-1) * 0.0
    sim = features @ features.T
    return (sim.sum(dim=1) - sim.diagonal()) / (n - 1)


def _first_copy(ctx: Context, rows: Tensor) -> Tensor:
    """The first transformed copy of each image ([n, ...]): diversity compares images, not copies of one image."""
    return rows[:ctx.n]


def diversity(layer: str | None = None) -> Objective:
    """Minus each image's mean similarity to the others: Gram (style) matrices of a layer, or joint-space embeddings."""
    def fn(ctx: Context) -> Tensor:
        if layer is None:
            feats = F.normalize(_first_copy(ctx, ctx.image_embeddings()), dim=-1)
        else:
            act = _first_copy(ctx, ctx.activation(layer))
            flat = act.flatten(2) if act.dim() == 4 else act.transpose(1, 2)  # [n, C, positions]
            # Gram matrices compare which channels fire together, not where: images differ in "style"
            # (Lucid's diversity objective), without being pushed to merely shift their content around.
            gram = flat @ flat.transpose(1, 2) / flat.shape[-1]
            feats = F.normalize(gram.flatten(1), dim=-1)
        return -_mean_similarity_to_others(feats)
    return Objective(fn, f"diversity({layer or 'embedding'})", layers=[layer] if layer else [])


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared great-circle distance between unit vectors (VQGAN+CLIP's loss): 2 * arcsin(|a - b| / 2)^2."""
    return (a - b).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)


def spherical_match(targets: Tensor, weights: Tensor, record: list[Tensor] | None = None) -> Objective:
    """Minus the weighted spherical distance of each view's embedding to target embeddings [P, d] (weights [P];
    a negative weight rewards distance): VQGAN inversion's objective, averaged over an image's views.

    `record`, when given, gets each step's weighted cosine per image [n] (positive weights, normalised).
    """
    positive = weights.clamp(min=0) / weights.clamp(min=0).sum()

    def fn(ctx: Context) -> Tensor:
        emb = ctx.image_embeddings()  # [views, d], view j * n + i of image i
        if record is not None:
            with torch.no_grad():
                cos = (emb @ targets.T).view(ctx.copies, ctx.n, -1).mean(0)
                record.append((cos * positive).sum(-1).cpu())
        return -(spherical_distance(emb[:, None, :], targets[None]) * weights).sum(-1)
    return Objective(fn, f"spherical_match({len(targets)} targets)")


# --- image priors (subtract them) -----------------------------------------------------------------------------

def l2(centre: float = 0.5) -> Objective:
    """Mean squared distance of each image's pixels from a grey level: a penalty to subtract."""
    return Objective(lambda ctx: (ctx.images - centre).square().flatten(1).mean(dim=1), f"l2({centre:g})")


def squared_total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels (horizontal, vertical, both diagonals) of a batch.

    DeepInversion's smoothness prior (recipes.brivl_lite.synthesis); a scalar over the whole batch.
    """
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return d1.square().mean() + d2.square().mean() + d3.square().mean() + d4.square().mean()


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of each image: a penalty to subtract."""
    def fn(ctx: Context) -> Tensor:
        x = ctx.images
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(dim=1)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(dim=1)
        return dx + dy
    return Objective(fn, "total_variation")


# --- BatchNorm statistics (DeepInversion) ------------------------------------------------------------------------

def batchnorm_divergence(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """KL(batch Gaussian || running Gaussian) of a BatchNorm layer's input [n, c, h, w], averaged over channels."""
    # DeepInversion's plain ||mean - running_mean|| + ||var - running_var|| is dominated, in EfficientNet,
    # by the few expanded layers whose running variances reach thousands; the per-channel Gaussian KL is
    # scale-free, so every layer and channel counts alike. BN's own eps keeps dead channels finite.
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False) + bn.eps
    run_var = bn.running_var + bn.eps
    ratio = var / run_var
    return 0.5 * (ratio + (mean - bn.running_mean).square() / run_var - 1 - torch.log(ratio)).mean()


_BN_KEY = "batchnorm:"  # capture.outputs keys of the per-layer divergences, "batchnorm:<index>"


def batchnorm_layers(model: TwoTower) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d with running statistics (timm's BatchNormAct2d subclasses it), in registration order."""
    layers = ([m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]
              if isinstance(model, nn.Module) else [])
    if not layers:
        raise UserInputError("the model has no BatchNorm2d layers with running statistics to match")
    return layers


def _install_batchnorm_hooks(model: TwoTower, cap: _Capture) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that store each BatchNorm input's divergence from the running statistics while cap.active."""
    def hook(i: int) -> Callable[[nn.Module, tuple, object], None]:
        def store(module: nn.Module, inputs: tuple, output: object) -> None:
            if cap.active:
                cap.outputs[f"{_BN_KEY}{i}"] = batchnorm_divergence(inputs[0], module)
        return store
    return [m.register_forward_hook(hook(i)) for i, m in enumerate(batchnorm_layers(model))]


def batchnorm_statistics(first_weight: float = 10.0) -> Objective:
    """How far the views' statistics at every BatchNorm input are from its running ones: a penalty to subtract.

    DeepInversion's image prior (Yin et al., "Dreaming to Distill", CVPR 2020): the model's training data fixed
    those statistics, so images that match them look like that data. The first layer (nearly raw pixels,
    colours and contrast) counts `first_weight` times, as in DeepInversion. One value for the whole batch.
    """
    def fn(ctx: Context) -> Tensor:
        ctx.image_embeddings()  # the forward pass that fills the hooks
        terms = [v for k, v in ctx.capture.outputs.items() if k.startswith(_BN_KEY)]
        if not terms:
            raise UserInputError("no BatchNorm2d layer ran in the model's encode_image")
        first = ctx.capture.outputs[f"{_BN_KEY}0"]
        return torch.stack(terms).sum() + (first_weight - 1) * first
    return Objective(fn, "batchnorm_statistics", hooks=(_install_batchnorm_hooks,))
