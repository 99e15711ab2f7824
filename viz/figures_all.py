"""Every paper figure the toolkit covers, regenerated in one go (`brivl figures all --out DIR`), with an index page.

- fig2   Fig. 2a-d: network visualisation (concepts, sentences, "mountains with ..."), neurons LLP-108/456/678
- fig3   Fig. 3: text to image by VQGAN inversion (`viz.figures.fig3`: scenes, a story, "blazing sea", ...) with the
         embedded VQGAN (`vqgan`: "lite", a folder, a taming .ckpt, or a VQGAN object), at most 100 steps
- fig4c  Fig. 4c: "baseball field viewed from above" (and its Chinese), network visualisation
- fig5c  Fig. 5c: top-30 phrases of "sports"/"automobile" (运动/汽车), the model beside its own text backbone, UMAP
- s2a    a Fig. S2a-shaped table: image<->text Recall@1/5/10 and Recall@SUM on 200 procedural captioned images
         (unique captions, never trained on), the model against a random `tiny` model (chance level)

Each figure lands in its own folder with its PNG and JSON; index.html and index.md show them all with their
settings. A figure that cannot be made (e.g. no VQGAN installed) is listed with the reason; the others still run.
"""
from __future__ import annotations

import html
import json
import platform
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import brivl
from brivl.errors import UserInputError
from brivl.eval import markdown_retrieval, read_retrieval_set, retrieval
from brivl.eval.backbone import TextBackboneModel
from brivl.toydata import make_toy_pairs
from brivl.twotower import TwoTower

from . import figures as F
from . import phrase_map as M
from . import phrases as P
from . import fonts
from .settings import FIGURES
from .network import imagine
from .vqgan import load_vqgan
from .vqgan_inversion import vqgan_imagine

ALL = FIGURES  # the figures `figures all` makes, in order (named in settings, which the parser reads)
FIG3_PROMPTS = ("blazing sea", "glowing forest", "cyberpunk-styled city", "castle in the clouds")  # Fig. 3d
FIG4C_PROMPTS = ("baseball field viewed from above", "从上方俯瞰的棒球场")
TITLES = {
    "fig2": "Fig. 2 — network and neuron visualisation",
    "fig3": "Fig. 3d — text to image by VQGAN inversion",
    "fig4c": "Fig. 4c — \u201cbaseball field viewed from above\u201d",
    "fig5c": "Fig. 5c — top-30 phrase retrieval, UMAP",
    "s2a": "Fig. S2a-style table — cross-modal retrieval",
}


def _grid(images, path: Path, titles: Sequence[str], title: str, cell: float = 2.8) -> Path:
    """One row of images with titles, drawn with a CJK font when one is installed (prompts may be Chinese)."""
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    font = fonts.find_cjk_font() or fonts.default_font()
    fig = Figure(figsize=(cell * len(images), cell + 0.7), dpi=150, layout="constrained")
    for ax, image, text in zip(fig.subplots(1, len(images), squeeze=False)[0], images, titles):
        ax.imshow(F.to_uint8(image))
        ax.set_axis_off()
        ax.set_title(F._wrap(text, 28), fontproperties=font.properties(9))
    fig.suptitle(title, fontproperties=font.properties(10))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def fig4c(model: TwoTower, out: str | Path, *, steps: int = 256, size: int | None = None, seed: int = 0,
          param: str = "fft", lr: float = 0.05, model_name: str | None = None, progress: bool | None = False) -> dict:
    """Fig. 4c: the visualisation of "baseball field viewed from above" (English and Chinese) as one grid."""
    out = Path(out)
    t0 = time.perf_counter()
    result = imagine(model, list(FIG4C_PROMPTS), steps=steps, size=size, seed=seed, param=param, lr=lr,
                     progress=progress)
    for i, image in enumerate(result.images):
        F.save_png(image, out / f"cell{i}.png")
    _grid(result.images, out / "fig4c.png", [f"\u201c{t}\u201d" for t in FIG4C_PROMPTS],
          f"Fig. 4c regenerated — {model_name or F._model_name(model)}, {steps} steps")
    info = {"figure": "fig4c", "model": model_name or F._model_name(model), "prompts": list(FIG4C_PROMPTS),
            "steps": steps, "size": int(result.images.shape[-1]), "seed": seed, "param": param, "lr": lr,
            "final_objective": result.history[-1].tolist(), "time_s": round(time.perf_counter() - t0, 3),
            "note": "The paper shows this beside an AID photo of a baseball field; no remote-sensing photo ships "
                    "with the toolkit, so only the visualisation is drawn.",
            "files": {"png": "fig4c.png", "cells": [f"cell{i}.png" for i in range(len(FIG4C_PROMPTS))]}}
    F.write_json(info, out / "fig4c.json")
    return info


def fig3(model: TwoTower, out: str | Path, *, vqgan="lite", steps: int = 256, size: int = 256, seed: int = 0,
         model_name: str | None = None, prompts: Sequence[str] = FIG3_PROMPTS, progress: bool | None = False) -> dict:
    """Fig. 3 by VQGAN inversion through `vqgan` (default: the embedded one): `viz.figures.fig3` (panels b-d; panel a
    needs a CLIP-style model) where it exists, else panel d alone with viz.vqgan_imagine."""
    out = Path(out)
    vq = load_vqgan(vqgan) if isinstance(vqgan, (str, Path)) else vqgan
    if hasattr(F, "fig3"):
        return F.fig3(model, vq, out, steps=steps, size=size, seed=seed, model_name=model_name, progress=progress)
    t0 = time.perf_counter()
    images, finals = [], []
    for text in prompts:
        r = vqgan_imagine(model, vq, text, steps=steps, size=size, seed=seed, progress=progress)
        images.append(r.images[0])
        finals.append(float(r.history[-1, 0]))
    for i, image in enumerate(images):
        F.save_png(image, out / f"cell{i}.png")
    _grid(torch.stack(images), out / "fig3.png", [f"\u201c{t}\u201d" for t in prompts],
          f"Fig. 3d regenerated — {model_name or F._model_name(model)} + VQGAN, {steps} steps")
    info = {"figure": "fig3", "panel": "d", "model": model_name or F._model_name(model),
            "vqgan": getattr(getattr(vq, "config", None), "name", str(vqgan)),
            "prompts": list(prompts), "steps": steps, "size": int(images[0].shape[-1]), "seed": seed,
            "final_objective": finals, "time_s": round(time.perf_counter() - t0, 3),
            "files": {"png": "fig3.png", "cells": [f"cell{i}.png" for i in range(len(prompts))]}}
    F.write_json(info, out / "fig3.json")
    return info


def fig5c(model: TwoTower, out: str | Path, *, phrase_limit: int | None = None, seed: int = 0, layout: str = "umap",
          model_name: str | None = None, index_root: str | Path | None = None, progress: bool | None = False) -> dict:
    """Fig. 5c: the model's text backbone alone beside the model, over jieba's phrases (indexes cached)."""
    name = model_name or F._model_name(model)
    columns: list[tuple[str, TwoTower]] = []
    try:
        columns.append((f"{name} text backbone", TextBackboneModel(model)))
    except TypeError:
        pass  # a model without a BriVL text tower: the model alone
    columns.append((name, model))
    plist = P.read_phrases("jieba", phrase_limit)
    built = [(label, m, P.build_index(m, P.default_index_folder(m, plist, index_root), plist, model_name=label,
                                      progress=progress)) for label, m in columns]
    info = M.fig5c(built, out, seed=seed, layout=layout)
    info["phrase_limit"] = phrase_limit
    F.write_json(info, Path(out) / "fig5c.json")
    return info


def s2a(model: TwoTower, out: str | Path, *, model_name: str | None = None, pairs: int = 200, seed: int = 2) -> dict:
    """A Fig. S2a-shaped retrieval table: the model and a random tiny model on procedural captioned images."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="brivl-s2a-") as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long procedural captions are truncated by small tokenizers
        data = read_retrieval_set(make_toy_pairs(Path(work) / "pairs", pairs, size=96, seed=seed, unique=True))
        runs = [(model_name or F._model_name(model), retrieval(model, data, progress=False))]
        runs.append(("tiny (random weights: chance level)", retrieval(brivl.load("tiny"), data, progress=False)))
    table = markdown_retrieval(runs)
    (out / "s2a.md").write_text(table, encoding="utf-8")
    ablation = Path(__file__).resolve().parents[1] / "bench" / "results" / "ablation.md"
    info = {"figure": "s2a", "data": f"{pairs} procedural captioned images (brivl.toydata, seed {seed}, unique "
                                     f"captions), never trained on", "seed": seed,
            "results": {m: {k: v for k, v in r.items() if k != "data"} for m, r in runs}, "markdown": table,
            "time_s": round(time.perf_counter() - t0, 3), "files": {"markdown": "s2a.md"},
            "note": "The paper's S2a compares pre-training variants (MoCo, SimCLR, w/o SA) on 22M pairs; "
                    "`python bench/ablation.py` retrains those variants at toy scale"
                    + (" (its last table: bench/results/ablation.md)." if ablation.is_file() else ".")}
    F.write_json(info, out / "s2a.json")
    return info


def fig2_channels(model: TwoTower) -> list[int]:
    """The paper's LLP-108/456/678 where the layer has them; else the same fractions of the layer's channels."""
    n = F.layer_channels(model, F.FIG2_LAYER)
    if all(c < n for c in F.FIG2_CHANNELS):
        return list(F.FIG2_CHANNELS)
    return [c * n // 1280 for c in F.FIG2_CHANNELS]  # B7's LLP has 2560 channels, B5's 2048; lite0's 1280


def regenerate_all(model: TwoTower, out: str | Path, *, model_name: str | None = None, steps: int = 256,
                   size: int | None = None, seed: int = 0, phrase_limit: int | None = None,
                   only: Sequence[str] | None = None, vqgan="lite", layout: str = "umap",
                   s2a_pairs: int = 200, log: Callable[[str], None] = print, progress: bool | None = False) -> dict:
    """Run every figure (or `only` these) into out/<figure>/, then write out/index.html, index.md and index.json.
    `progress` (brivl.progress.bar) reports each render and phrase index as it runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(only or ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise UserInputError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    name = model_name or F._model_name(model)
    jobs = {
        "fig2": lambda d: F.fig2(model, d, steps=steps, size=size, seed=seed, model_name=name, progress=progress,
                                 channels=fig2_channels(model)),
        # VQGAN inversion at its own default of 100 steps at most: 12 images of 256 px, each step 8 cutouts.
        "fig3": lambda d: fig3(model, d, vqgan=vqgan, steps=min(steps, 100), size=size or 256, seed=seed,
                               model_name=name, progress=progress),
        "fig4c": lambda d: fig4c(model, d, steps=steps, size=size, seed=seed, model_name=name, progress=progress),
        "fig5c": lambda d: fig5c(model, d, phrase_limit=phrase_limit, seed=seed, layout=layout, model_name=name,
                                 progress=progress),
        "s2a": lambda d: s2a(model, d, model_name=name, pairs=s2a_pairs),
    }
    entries = []
    t_all = time.perf_counter()
    for key in names:
        t0 = time.perf_counter()
        log(f"{key}: {TITLES[key]} ...")
        try:
            info = jobs[key](out / key)
            entry = {"figure": key, "ok": True, "info": info}
        except Exception as e:  # noqa: BLE001 - one figure failing must not stop the others; the index says why
            entry = {"figure": key, "ok": False, "error": f"{type(e).__name__}: {e}",
                     "trace": traceback.format_exc(limit=3)}
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        log(f"{key}: {'done' if entry['ok'] else 'FAILED: ' + entry['error']} ({entry['seconds']:.1f} s)")
        entries.append(entry)
    summary = {"model": name, "steps": steps, "size": size, "seed": seed, "phrase_limit": phrase_limit,
               "vqgan": vqgan if isinstance(vqgan, str) else getattr(getattr(vqgan, "config", None), "name", "vqgan"),
               "time_s": round(time.perf_counter() - t_all, 3), "torch": torch.__version__,
               "python": platform.python_version(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
               "figures": [{k: v for k, v in e.items() if k != "info"} for e in entries]}
    F.write_json(summary, out / "index.json")
    (out / "index.html").write_text(_html(summary, entries), encoding="utf-8")
    (out / "index.md").write_text(_markdown(summary, entries), encoding="utf-8")
    return summary


def _picture(key: str, info: dict) -> str | None:
    files = info.get("files", {})
    png = files.get("grid") or files.get("png")
    return f"{key}/{png}" if png else None


def _settings(info: dict) -> dict:
    drop = {"files", "panels", "markdown", "results", "final_objective", "indexes", "note", "prompts"}
    return {k: v for k, v in info.items() if k not in drop}


def _html(summary: dict, entries: list[dict]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>BriVL figures — {html.escape(summary['model'])}"
             "</title><style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:.6em;overflow:auto;"
             "font-size:12px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}.err{color:#b00}</style></head><body>",
             f"<h1>The paper's figures, regenerated with {html.escape(summary['model'])}</h1>",
             f"<p>{summary['steps']} render steps, seed {summary['seed']}, total {summary['time_s']:.0f} s, "
             f"created {summary['created']} (torch {summary['torch']}). Every figure's settings are in its JSON.</p>"]
    for e in entries:
        key = e["figure"]
        parts.append(f"<h2 id='{key}'>{html.escape(TITLES[key])}</h2>")
        if not e["ok"]:
            parts.append(f"<p class='err'>Not regenerated: {html.escape(e['error'])}</p>")
            continue
        info = e["info"]
        pic = _picture(key, info)
        if pic:
            parts.append(f"<p><a href='{pic}'><img src='{pic}' alt='{key}'></a></p>")
        if key == "s2a":
            parts.append(_md_table_html(info["markdown"]))
        if info.get("note"):
            parts.append(f"<p><em>{html.escape(info['note'])}</em></p>")
        parts.append(f"<p>{e['seconds']:.1f} s · <a href='{key}/{key}.json'>{key}.json</a></p>")
        parts.append(f"<pre>{html.escape(json.dumps(_settings(info), indent=1, ensure_ascii=False))}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_table_html(markdown: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in markdown.strip().splitlines() if r.strip()]
    rows = [r for r in rows if not set("".join(r)) <= set("-: ")]
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    lines = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{cells}</tr>{lines}</table>"


def _markdown(summary: dict, entries: list[dict]) -> str:
    out = [f"# The paper's figures, regenerated with {summary['model']}", "",
           f"{summary['steps']} render steps, seed {summary['seed']}, total {summary['time_s']:.0f} s "
           f"({summary['created']}).", ""]
    for e in entries:
        key = e["figure"]
        out += [f"## {TITLES[key]}", ""]
        if not e["ok"]:
            out += [f"Not regenerated: {e['error']}", ""]
            continue
        info = e["info"]
        pic = _picture(key, info)
        if pic:
            out += [f"![{key}]({pic})", ""]
        if key == "s2a":
            out += [info["markdown"], ""]
        out += [f"Settings: `{json.dumps(_settings(info), ensure_ascii=False)}` ({e['seconds']:.1f} s)", ""]
    return "\n".join(out)
