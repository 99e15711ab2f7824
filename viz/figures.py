"""The paper's figures, regenerated for any TwoTower model; plus the image grids and PNG writers they use.

`fig2` redraws Fig. 2 of the BriVL paper (Fei et al., "Towards artificial general intelligence via a multimodal
foundation model", Nat. Commun. 2022): network visualisation of (a) four abstract concepts, (b) four sentences,
(c) four "mountains with ..." prompts, and (d) neuron visualisation of three LLP channels under the texts
"forest" and "mountains". Each panel renders as one batch (one prompt, or one channel-and-text pair, per row).
The paper's inputs were Chinese; the prompts below are the English translations the paper prints.
"""
from __future__ import annotations

import json
import math
import platform
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from brivl.errors import UserInputError
from brivl.twotower import TwoTower

from . import objectives as O
from . import fonts
from .param import ParamKind
from .render_loop import Render, _device, render
from .scores import cross_scores
from .vqgan_inversion import vqgan_imagine

# Fig. 2a: "visualizations ... w.r.t. different high-level concepts".
FIG2_CONCEPTS = ("nature", "time", "science", "dream")
# Fig. 2b: the caption says only "free-form text inputs"; the four sentences are quoted in the Results text
# ("In Fig. 2b, we show the visualizations of sentences. The visualization of ...").
FIG2_SENTENCES = (
    "Every cloud has a silver lining.",
    "Let life be beautiful like summer flowers.",
    "A few peach flowers start to blossom outside the bamboo grove.",
    "The sun goes down below the mountains, and the Yellow River flows into the sea.",
)
# Fig. 2c: "different semantic restrictions related to 'mountains with'".
FIG2_MOUNTAINS = ("mountains with forests", "mountains with stones", "mountains with snow",
                  "mountains with waterfall")
# Fig. 2d: neurons LLP-108, LLP-456 and LLP-678, each under the texts "forest" and "mountains".
FIG2_CHANNELS = (108, 456, 678)
FIG2_NEURON_TEXTS = ("forest", "mountains")
FIG2_LAYER = "llp"

FIG2_PANELS = {
    "a": "high-level concepts",
    "b": "free-form sentences",
    "c": "\u201cmountains with ...\u201d",
    "d": "neurons under a text constraint",
}


class ChannelError(UserInputError):
    """A layer the model does not expose, or a channel number beyond that layer's channel count."""


# --- layers and channels --------------------------------------------------------------------------------------

def layer_channels(model: TwoTower, layer: str = FIG2_LAYER) -> int:
    """Number of channels of a layer in model.feature_layers(), found with one forward pass on a grey image."""
    layers = model.feature_layers()
    if layer not in layers:
        raise ChannelError(f"layer {layer!r} is not one of the model's feature layers ({', '.join(layers)})")
    out: list[Tensor] = []

    def keep(module, inputs, output) -> None:
        out.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = layers[layer].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model.encode_image(torch.full((1, 3, model.image_size, model.image_size), 0.5, device=_device(model)))
    finally:
        handle.remove()
    if not out:
        raise ChannelError(f"layer {layer!r} did not run in encode_image")
    act = out[0]
    return int(act.shape[-1] if act.dim() == 3 else act.shape[1])  # [n, L, C] tokens keep channels last


def check_channels(model: TwoTower, layer: str, channels: Sequence[int]) -> int:
    """The layer's channel count; raises ChannelError naming any channel outside [0, count)."""
    count = layer_channels(model, layer)
    bad = [c for c in channels if not 0 <= int(c) < count]
    if bad:
        raise ChannelError(f"channel(s) {', '.join(map(str, bad))} out of range: layer {layer!r} of this model has "
                           f"{count} channels (0-{count - 1}); pick channels below {count}")
    return count


# --- images to files ------------------------------------------------------------------------------------------

def to_uint8(image: Tensor):
    """One image [3,H,W] (or [1,3,H,W]) in [0, 1] as a numpy uint8 array [H, W, 3]."""
    if image.dim() == 4:
        image = image[0]
    return (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write one image [3,H,W] in [0, 1] as a PNG at its own size (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def write_json(data: dict, path: str | Path) -> Path:
    """Write data as indented JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _text_font(texts: Sequence[str]) -> Callable[[float], dict]:
    """Text keyword arguments at a size: a CJK font when any text holds Chinese (DejaVu draws it as boxes)."""
    if any(ord(ch) > 0x2E7F for t in texts for ch in t):
        cjk = fonts.find_cjk_font()
        if cjk is not None:
            return lambda size: {"fontproperties": cjk.properties(size)}
    return lambda size: {"fontsize": size}


def save_grid(images: Tensor | Sequence[Tensor], path: str | Path, *, titles: Sequence[str] | None = None,
              captions: Sequence[str] | None = None, ncols: int | None = None, title: str | None = None,
              cell: float = 2.0, dpi: int = 150, wrap: int = 24) -> Path:
    """A grid of images [n,3,H,W] with a title above and a caption below each cell, written as a PNG."""
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    n = len(images)
    if n == 0:
        raise UserInputError("save_grid needs at least one image")
    ncols = ncols or min(n, 6)
    nrows = math.ceil(n / ncols)
    def lines(texts: Sequence[str] | None) -> int:
        return max((len(textwrap.wrap(t, wrap)) for t in texts), default=0) if texts else 0

    text_h = 0.16 * (lines(titles) + lines(captions))  # inches of text per row
    fig = Figure(figsize=(cell * ncols, (cell + text_h + 0.1) * nrows + (0.4 if title else 0)), dpi=dpi,
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    font = _text_font([*(titles or []), *(captions or []), title or ""])
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(to_uint8(images[i]))
        if titles is not None:
            ax.set_title(_wrap(titles[i], wrap), **font(8))
        if captions is not None:
            ax.text(0.5, -0.03, _wrap(captions[i], wrap), transform=ax.transAxes, ha="center", va="top", **font(7))
    if title:
        fig.suptitle(title, **font(10))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# --- Fig. 2 ---------------------------------------------------------------------------------------------------

@dataclass
class Panel:
    """One rendered panel: its key ("a"-"d"), cell labels, the images [n,3,H,W] and the seconds it took."""

    key: str
    labels: list[str]
    images: Tensor
    seconds: float
    final: list[float] = field(default_factory=list)


def fig2_prompts() -> dict[str, list[str]]:
    """The paper's Fig. 2 texts per panel (panel d: the constraint texts, used with every channel)."""
    return {"a": list(FIG2_CONCEPTS), "b": list(FIG2_SENTENCES), "c": list(FIG2_MOUNTAINS),
            "d": list(FIG2_NEURON_TEXTS)}


def _model_name(model: TwoTower) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "name", None) or type(model).__name__)


def _draw_fig2(panels: dict[str, Panel], channels: Sequence[int], texts: Sequence[str], layer: str, path: Path,
               title: str) -> Path:
    """Panels a-c as rows of four, panel d as a (text x channel) block under them; titled cells, one PNG."""
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    ncols = max(4, len(channels))
    wrap = 30
    fig = Figure(figsize=(2.3 * ncols + 0.6, 2.75 * 3 + 2.45 * len(texts) + 0.9), dpi=150, layout="constrained")
    heights = [1.0, 1.12, 1.0] + [0.97] * len(texts)
    # Two grid columns per cell, so panel d (three cells) can sit centred under rows of four.
    grid = fig.add_gridspec(len(heights), 2 * ncols, height_ratios=heights)

    def cell(row: int, col: int, span_start: int = 0):
        ax = fig.add_subplot(grid[row, span_start + 2 * col: span_start + 2 * col + 2])
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        return ax

    for row, key in enumerate("abc"):
        panel = panels[key]
        for j, (label, image) in enumerate(zip(panel.labels, panel.images)):
            ax = cell(row, j)
            ax.imshow(to_uint8(image))
            ax.set_title(_wrap(f"\u201c{label}\u201d", wrap), fontsize=8.5)
            if j == 0:
                ax.set_ylabel(f"{key}  {FIG2_PANELS[key]}", fontsize=9, fontweight="bold")
    panel = panels["d"]
    start = ncols - len(channels)  # centre the block: grid columns are half-cells
    for t, text in enumerate(texts):
        for j, c in enumerate(channels):
            ax = cell(3 + t, j, start)
            ax.imshow(to_uint8(panel.images[j * len(texts) + t]))
            if t == 0:
                ax.set_title(f"{layer.upper()}-{c}", fontsize=9, fontweight="bold")
            if j == 0:
                head = f"d  {FIG2_PANELS['d']}\n" if t == 0 else ""
                ax.set_ylabel(f"{head}+ \u201c{text}\u201d", fontsize=9, fontweight="bold" if t == 0 else "normal")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    return path


def _save_cells(panels: dict[str, Panel], out: Path) -> dict[str, list[str]]:
    """Each panel's images as out/cells/<panel><i>-<label>.png; returns the file names per panel."""
    cells: dict[str, list[str]] = {}
    for key, panel in panels.items():
        cells[key] = []
        for i, (label, image) in enumerate(zip(panel.labels, panel.images)):
            slug = "".join(ch if ch.isalnum() else "-" for ch in label.lower()).strip("-")
            while "--" in slug:
                slug = slug.replace("--", "-")
            name = f"cells/{key}{i}-{slug[:48]}.png"
            save_png(image, out / name)
            cells[key].append(name)
    return cells


def fig2(
    model: TwoTower,
    out_dir: str | Path,
    *,
    steps: int = 128,  # viz.network.IMAGINE_STEPS
    size: int | None = None,
    seed: int = 0,
    param: ParamKind = "fft",
    decorrelate: bool = True,
    lr: float = 0.05,
    channels: Sequence[int] = FIG2_CHANNELS,
    layer: str = FIG2_LAYER,
    text_weight: float = 1.0,
    model_name: str | None = None,
    progress: bool | None = None,
    callback: Callable[[str, int, Tensor], None] | None = None,
) -> dict:
    """Render the paper's Fig. 2 into out_dir: fig2.png (the grid), fig2.json (every setting), cells/*.png.

    Panels a-c maximise the image-text cosine for four texts each; panel d adds the mean of one channel of
    `layer` to the cosine with "forest" or "mountains" (`text_weight` weighs the cosine; the paper gives none).
    Each panel is one batch. Channels the layer lacks raise ChannelError before anything renders.
    `callback(panel, step, images)` follows each panel's progress. Returns what fig2.json holds.
    """
    channels = [int(c) for c in channels]
    if not channels:
        raise ChannelError("fig2 needs at least one channel for panel d")
    n_channels = check_channels(model, layer, channels)
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    prompts = fig2_prompts()
    texts = prompts["d"]
    common = {"steps": steps, "size": size, "seed": seed, "param": param, "decorrelate": decorrelate, "lr": lr,
              "transforms": "standard", "progress": progress}

    def run(key: str, objective: O.Objective, n: int) -> tuple[Render, float]:
        cb = None if callback is None else (lambda step, images: callback(key, step, images))
        t0 = time.perf_counter()
        result = render(model, objective, batch=n, callback=cb, **common)
        return result, time.perf_counter() - t0

    panels: dict[str, Panel] = {}
    for key in "abc":
        result, seconds = run(key, O.text_match(prompts[key]), len(prompts[key]))
        panels[key] = Panel(key, prompts[key], result.images, seconds, result.history[-1].tolist())
    # Panel d: row r = (channel j, text t) with r = j * len(texts) + t; each row maximises its own channel.
    rows = [(c, t) for c in channels for t in texts]
    neuron = sum(O.channel(layer, c).on(r) for r, (c, _) in enumerate(rows))
    result, seconds = run("d", neuron + text_weight * O.text_match([t for _, t in rows]), len(rows))
    panels["d"] = Panel("d", [f"{layer.upper()}-{c} + {t}" for c, t in rows], result.images, seconds,
                        result.history[-1].tolist())

    cells = _save_cells(panels, out)
    name = model_name or _model_name(model)
    side = int(panels["a"].images.shape[-1])
    title = f"Fig. 2 regenerated \u2014 {name}, {steps} steps, {side} px, seed {seed}, {param}"
    _draw_fig2(panels, channels, texts, layer, out / "fig2.png", title)
    info = {
        "figure": "fig2", "model": name, "steps": steps, "size": side, "seed": seed, "param": param,
        "decorrelate": decorrelate, "lr": lr, "transforms": "standard", "prompts": prompts, "layer": layer,
        "layer_channels": n_channels, "channels": channels, "text_weight": text_weight,
        "batches": {key: len(p.labels) for key, p in panels.items()},
        "panel_d_rows": [{"channel": c, "text": t} for c, t in rows],
        "final_objective": {key: p.final for key, p in panels.items()},
        "seconds": {key: round(p.seconds, 3) for key, p in panels.items()},
        "time_s": round(sum(p.seconds for p in panels.values()), 3),
        "device": str(_device(model)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "note": "Prompts are the English translations the paper prints (its inputs were Chinese). Panel b's "
                "caption says only 'free-form text inputs'; its four sentences are quoted in the Results text.",
        "files": {"grid": "fig2.png", "cells": cells},
    }
    write_json(info, out / "fig2.json")
    return info


# --- Fig. 3 ---------------------------------------------------------------------------------------------------

# Fig. 3d: the paper names these four in its Results text ("blazing sea", "glowing forest", "cyberpunk-styled city",
# "castle in the clouds").
FIG3_IMAGINATION = ("blazing sea", "glowing forest", "cyberpunk-styled city", "castle in the clouds")
# Fig. 3a/b (four text inputs, CLIP vs BriVL) and Fig. 3c (four coherent sentences, one style): the paper prints
# these texts only inside the figure image, not in its text. These are stand-ins of the same kind (scenes for a/b,
# one coherent story for c), marked as such in fig3.json; pass the figure's own texts with `prompts=`.
FIG3_SCENES = ("a night view of tall buildings by the river", "a lighthouse on a cliff at sunset",
               "a small wooden boat on a calm lake", "a cottage among snowy mountains")
FIG3_STORY = ("The sun rises over a quiet village by the river.",
              "Farmers walk along the river to the fields.",
              "In the afternoon dark clouds gather and it begins to rain.",
              "At night the rain stops and the moon shines over the village.")
FIG3_PANELS = {"a": "VQGAN inversion with {compare}", "b": "VQGAN inversion with {model}",
               "c": "a series of coherent sentences ({model})", "d": "rarely seen or unreal scenes ({model})"}


def _draw_rows(rows: Sequence[tuple[str, Sequence[str], Tensor]], path: Path, title: str) -> Path:
    """One row of quoted-title cells per panel, the panel's name as the row label on the left; one PNG."""
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    ncols = max(len(labels) for _, labels, _ in rows)
    fig = Figure(figsize=(2.3 * ncols + 0.6, 2.75 * len(rows) + 0.5), dpi=150, layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (name, labels, images) in enumerate(rows):
        for j in range(ncols):
            ax = axes[r][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(labels):
                continue
            ax.imshow(to_uint8(images[j]))
            ax.set_title(_wrap(f"\u201c{labels[j]}\u201d", 30), fontsize=8.5)
            if j == 0:
                ax.set_ylabel(_wrap(name, 26), fontsize=9, fontweight="bold")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    return path


def fig3_prompts() -> dict[str, list[str]]:
    """The Fig. 3 texts per panel: a and b share theirs (the compared model and ours), c a story, d the paper's four."""
    return {"a": list(FIG3_SCENES), "b": list(FIG3_SCENES), "c": list(FIG3_STORY), "d": list(FIG3_IMAGINATION)}


def fig3(
    model: TwoTower,
    vqgan,
    out_dir: str | Path,
    *,
    compare: TwoTower | None = None,
    model_name: str | None = None,
    compare_name: str | None = None,
    prompts: dict[str, Sequence[str]] | None = None,
    steps: int = 100,
    size: int = 256,
    seed: int = 0,
    lr: float | None = None,
    tokens: str = "z",
    cutn: int = 8,
    cut_pow: float = 1.0,
    progress: bool | None = None,
    callback: Callable[[str, int, int, Tensor], None] | None = None,
) -> dict:
    """Render the paper's Fig. 3 (VQGAN inversion) into out_dir: fig3.png, fig3.json and cells/*.png.

    Panel a uses `compare` (a CLIP-style model; skipped when None), b-d use `model`; every image is generated
    independently from the same seed, as in the paper. `callback(panel, index, step, images)` follows progress.
    """
    texts = fig3_prompts()
    for key, values in (prompts or {}).items():
        if key not in texts:
            raise UserInputError(f"unknown Fig. 3 panel {key!r}; panels are a, b, c, d")
        texts[key] = list(values)
    if prompts and "b" in prompts and "a" not in prompts:
        texts["a"] = list(prompts["b"])
    name = model_name or _model_name(model)
    other = compare_name or (_model_name(compare) if compare is not None else None)
    keys = ["a", "b", "c", "d"] if compare is not None else ["b", "c", "d"]
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    panels: dict[str, Panel] = {}
    cells: dict[str, list[str]] = {}
    for key in keys:
        who = compare if key == "a" else model
        images, finals, cells[key] = [], [], []
        t0 = time.perf_counter()
        for i, text in enumerate(texts[key]):
            cb = None if callback is None else (lambda step, imgs, k=key, j=i: callback(k, j, step, imgs))
            r = vqgan_imagine(who, vqgan, text, steps=steps, size=size, seed=seed, lr=lr, param=tokens, cutn=cutn,
                              cut_pow=cut_pow, progress=progress, callback=cb)
            images.append(r.images[0])
            finals.append(round(r.history[-1, 0].item(), 4))
            slug = "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())[:48]
            cells[key].append(save_png(r.images[0], out / f"cells/{key}{i}-{slug}.png").relative_to(out).as_posix())
        panels[key] = Panel(key, texts[key], torch.stack(images), time.perf_counter() - t0, finals)

    labels = {k: FIG3_PANELS[k].format(model=name, compare=other) for k in keys}
    side = int(panels["b"].images.shape[-1])
    vq_name = getattr(getattr(vqgan, "config", None), "name", "vqgan")
    _draw_rows([(f"{k}  {labels[k]}", panels[k].labels, panels[k].images) for k in keys], out / "fig3.png",
               f"Fig. 3 regenerated \u2014 VQGAN inversion ({vq_name}), {steps} steps, {side} px, seed {seed}")
    info = {
        "figure": "fig3", "model": name, "compare": other, "vqgan": vq_name, "steps": steps, "size": side,
        "seed": seed, "lr": lr, "tokens": tokens, "cutn": cutn, "cut_pow": cut_pow,
        "panels": labels, "prompts": {k: panels[k].labels for k in keys},
        "final_cosine": {k: panels[k].final for k in keys},
        "seconds": {k: round(panels[k].seconds, 3) for k in keys},
        "time_s": round(sum(p.seconds for p in panels.values()), 3),
        "device": str(_device(model)), "torch": torch.__version__, "python": platform.python_version(),
        "note": "Panel d's texts are the paper's (its Results text names them). The texts of panels a/b and c are "
                "printed only inside the paper's figure image; the defaults here are stand-ins of the same kind "
                "unless `prompts` replaced them. Panel a needs a CLIP-style model (compare).",
        "stand_in_prompts": [k for k in ("a", "b", "c") if k in keys and not (prompts and k in prompts)],
        "files": {"grid": "fig3.png", "cells": cells},
    }
    if compare is not None:  # each side's renders under the other model: a picture of the text, or one model's pattern?
        a = cross_scores([model], panels["a"].images, texts["a"])[0]
        b = cross_scores([compare], panels["b"].images, texts["b"])[0]
        info["cross_cosine"] = {f"a under {name}": [round(v, 4) for v in a.tolist()],
                                f"b under {other}": [round(v, 4) for v in b.tolist()]}
    write_json(info, out / "fig3.json")
    return info
