"""2-D maps of phrase retrieval (the paper's Fig. 5c): a query and its top-k phrases from a `viz.phrases` index,
laid out with seeded UMAP (or PCA), drawn side by side for several models with a CJK font (`viz.fonts`)."""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from brivl.errors import UserInputError
from brivl.twotower import TwoTower

from . import fonts as viz_fonts
from .figures import write_json
from .phrases import PhraseIndex, StaleIndexError, model_fingerprint

FIG5C_QUERIES = ("运动", "汽车")  # "sports" and "automobile" (Fig. 5c)
FIG5C_ENGLISH = {"运动": "sports", "汽车": "automobile"}


def layout_2d(vectors: np.ndarray | Tensor, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
              min_dist: float = 0.1) -> tuple[np.ndarray, dict]:
    """2-D coordinates [n, 2] of unit vectors and the settings used: seeded UMAP (cosine), or PCA.

    UMAP with a random_state runs single-threaded and gives the same layout every time; its first call in a
    process compiles for ~15 s (numba). PCA is instant and needs no compile.
    """
    x = (vectors.detach().float().cpu().numpy() if isinstance(vectors, Tensor) else np.asarray(vectors, np.float32))
    n = x.shape[0]
    if method == "pca" or n < 4:
        centred = x - x.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
        vt = vt[:2] * np.where(vt[:2].sum(1, keepdims=True) < 0, -1, 1)  # a fixed sign per axis
        xy = centred @ vt.T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        return xy.astype(np.float32), {"method": "pca"}
    if method != "umap":
        raise UserInputError(f"unknown layout {method!r}; use 'umap' or 'pca'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba/umap chatter (n_jobs overridden by random_state, ...)
        import umap  # deferred: umap-learn compiles with numba on first use

        settings = {"method": "umap", "n_neighbors": min(n_neighbors, n - 1), "min_dist": min_dist,
                    "metric": "cosine", "random_state": seed, "init": "spectral", "umap": umap.__version__}
        reducer = umap.UMAP(n_components=2, n_neighbors=settings["n_neighbors"], min_dist=min_dist, metric="cosine",
                            random_state=seed, init="spectral")
        try:
            xy = reducer.fit_transform(x)
        except (ValueError, TypeError):  # degenerate inputs (e.g. identical vectors): random init still works
            settings["init"] = "random"
            xy = umap.UMAP(n_components=2, n_neighbors=settings["n_neighbors"], min_dist=min_dist, metric="cosine",
                           random_state=seed, init="random").fit_transform(x)
    return np.asarray(xy, np.float32), settings


@dataclass
class PhraseMap:
    """One panel: a query, its top-k phrases (best first) with cosine scores, and 2-D coordinates (query first)."""

    model: str
    query: str
    phrases: list[str]
    scores: list[float]
    xy: np.ndarray
    layout: dict


@torch.no_grad()
def phrase_map(model: TwoTower, index: PhraseIndex, query: str, k: int = 30, method: str = "umap", seed: int = 0,
               model_name: str | None = None) -> PhraseMap:
    """The query and its top-k phrases laid out in 2-D from their embeddings (the query's own is point 0)."""
    if model_fingerprint(model) != index.meta.get("model_fingerprint"):
        raise StaleIndexError(f"{index.folder}: this index was built with another model ({index.meta.get('model')})")
    q = model.encode_text([query]).float().cpu()
    scores, ids = index.search_embeddings(q, k)
    vectors = torch.cat([q, index.embeddings[ids[0].to(index.embeddings.device)].float().cpu()])
    xy, settings = layout_2d(vectors, method, seed)
    return PhraseMap(model_name or index.meta.get("model", "model"), query, [index.phrases[i] for i in ids[0].tolist()],
                     scores[0].tolist(), xy, settings)


def _label(text: str, rank: int, font, fallback: bool) -> str:
    return text if not fallback or viz_fonts.covers(font, text) else f"#{rank}"


def draw_phrase_maps(maps: Sequence[Sequence[PhraseMap]], path: str | Path, *, title: str | None = None,
                     english: dict[str, str] | None = None, dpi: int = 150) -> dict:
    """Draw rows x columns of phrase maps (rows: queries, columns: models) into a PNG; returns font information.

    Labels use a CJK font when one is installed (`viz.fonts.find_cjk_font`); without one, labels the default font
    cannot draw become their rank ('#3') and a warning says which package to install.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw

    cjk = viz_fonts.find_cjk_font()
    font = cjk or viz_fonts.default_font()
    texts = [m.query for row in maps for m in row] + [p for row in maps for m in row for p in m.phrases]
    fallback = cjk is None
    stand_ins = fallback and any(not _covers(font, t) for t in texts)
    warning = None
    if stand_ins:
        warning = (f"no CJK font found: labels {font.name} cannot draw are shown as their rank (#k) and listed in the "
                   f"JSON; {viz_fonts.INSTALL_HINT}")
        warnings.warn(warning, stacklevel=2)
    rows, cols = len(maps), max(len(r) for r in maps)
    fig = Figure(figsize=(5.2 * cols, 4.8 * rows), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    small, big = font.properties(7), font.properties(9)
    for r, row in enumerate(maps):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            m = row[c]
            xy = m.xy
            sc = ax.scatter(xy[1:, 0], xy[1:, 1], c=m.scores, cmap="viridis", s=22, zorder=2)
            ax.scatter(xy[:1, 0], xy[:1, 1], marker="*", s=220, c="crimson", edgecolors="k", linewidths=0.5, zorder=3)
            star = m.query if not fallback or _covers(font, m.query) else (english or {}).get(m.query, "query")
            ax.star_label = ax.annotate(star, xy[0], xytext=(5, 5), textcoords="offset points",
                                        fontproperties=font.properties(11), color="crimson", weight="bold", zorder=4)
            ax.labels = [ax.annotate(_label(phrase, rank, font, fallback), point, xytext=(3, 2),
                                     textcoords="offset points", fontproperties=small, zorder=4)
                         for rank, (phrase, point) in enumerate(zip(m.phrases, xy[1:]), 1)]
            gloss = english.get(m.query) if english else None
            shown = m.query if not fallback or _covers(font, m.query) else None
            query = " ".join(x for x in (shown and f"\u201c{shown}\u201d", gloss and f"({gloss})") if x) or "query"
            ax.set_title(f"{_label(m.model, 0, font, fallback)}: {query}, top-{len(m.phrases)}", fontproperties=big)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.margins(0.12)
            fig.colorbar(sc, ax=ax, shrink=0.6, label="cosine")
    if title:
        fig.suptitle(title, fontproperties=font.properties(11))
    _spread_labels(fig, [a for row in axes for a in row])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    return {"font": {"name": font.name, "path": font.path, "cjk": cjk is not None},
            "font_warning": warning, "stand_in_labels": stand_ins}


# Where a phrase's label may sit relative to its point, in points, tried in this order (the first is the default).
_OFFSETS = ((3, 2, "left"), (3, -9, "left"), (-3, 2, "right"), (-3, -9, "right"), (3, 9, "left"), (3, -16, "left"),
            (-3, 9, "right"), (-3, -16, "right"))


def _spread_labels(fig, axes) -> None:
    """Move each phrase label (best rank first) to the first offset where it overlaps no label placed before it,
    so that close points do not print their phrases on top of each other (else the offset that overlaps least)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib loads only to draw

    FigureCanvasAgg(fig).draw()  # lays the figure out, so label extents are known in pixels
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        star = getattr(ax, "star_label", None)
        placed = [star.get_window_extent(renderer)] if star is not None else []
        for label in getattr(ax, "labels", []):
            best = None
            for dx, dy, ha in _OFFSETS:
                label.xyann = (dx, dy)
                label.set_horizontalalignment(ha)
                box = label.get_window_extent(renderer).expanded(1.02, 1.05)
                clash = sum(_overlap(box, other) for other in placed)
                if best is None or clash < best[0]:
                    best = (clash, dx, dy, ha, box)
                if clash == 0:
                    break
            _, dx, dy, ha, box = best
            label.xyann = (dx, dy)
            label.set_horizontalalignment(ha)
            placed.append(box)


def _overlap(a, b) -> float:
    """The area two display boxes share (0 when apart)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _covers(font, text: str) -> bool:
    return viz_fonts.covers(font, text)


def fig5c(models: Sequence[tuple[str, TwoTower, PhraseIndex]], out: str | Path, *,
          queries: Sequence[str] = FIG5C_QUERIES, k: int = 30, seed: int = 0, layout: str = "umap",
          english: dict[str, str] | None = None) -> dict:
    """Fig. 5c: top-k phrase retrieval of each query with each model, UMAP maps side by side (PNG + JSON).

    `models` are (label, model, its index) columns; in the paper, RoBERTa-large and BriVL w/ RoBERTa-large on jieba's
    phrases, queries "sports" and "automobile" (运动, 汽车). Writes out/fig5c.png and out/fig5c.json.
    """
    if not models:
        raise UserInputError("fig5c needs at least one model")
    out = Path(out)
    t0 = time.perf_counter()
    maps = [[phrase_map(m, idx, q, k, layout, seed, label) for label, m, idx in models] for q in queries]
    png = out / "fig5c.png"
    english = FIG5C_ENGLISH if english is None else english
    fonts = draw_phrase_maps(maps, png, english=english,
                             title=f"Top-{k} phrase retrieval ({models[0][2].meta.get('source')}, "
                                   f"{len(models[0][2]):,} phrases), {maps[0][0].layout['method'].upper()}")
    info = {
        "figure": "fig5c", "queries": list(queries), "english": {q: english.get(q) for q in queries}, "k": k,
        "seed": seed, "layout": maps[0][0].layout, **fonts,
        "indexes": [{"model": label, "folder": str(idx.folder), "source": idx.meta.get("source"), "count": len(idx),
                     "dim": idx.dim, "model_fingerprint": idx.meta.get("model_fingerprint"),
                     "build_seconds": idx.meta.get("build_seconds")} for label, _, idx in models],
        "panels": [{"model": m.model, "query": m.query, "query_xy": [float(v) for v in m.xy[0]],
                    "top": [{"rank": r, "phrase": p, "cosine": round(s, 5), "xy": [float(v) for v in xy]}
                            for r, (p, s, xy) in enumerate(zip(m.phrases, m.scores, m.xy[1:]), 1)]}
                   for row in maps for m in row],
        "time_s": round(time.perf_counter() - t0, 3), "torch": torch.__version__, "files": {"png": png.name},
    }

    write_json(info, out / "fig5c.json")
    return info
