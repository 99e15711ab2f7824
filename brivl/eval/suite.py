"""The evaluation suite on any TwoTower model: zero-shot image classification with the unseen/seen protocol,
zero-shot text classification and image<->text retrieval, with results as JSON and as markdown tables shaped like
the paper's (Fig. 4a/b, Fig. 5a/b, Fig. 6a and S2a).

Class embeddings follow the paper: "we first obtain class embeddings by inputting class names into the text
encoder", so the default prompt template is the bare class name "{}"; other templates are averaged (the mean of
their normalised embeddings, normalised again).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..boxes import RELEASE_MAX_BOXES, load_images_with_boxes
from ..images import load_images
from ..inputs import InputError
from ..progress import bar as progress_bar
from .datasets import ClassFolders, LabelledTexts, RetrievalSet
from .protocol import DEFAULT_SPLITS, Ratio, parse_ratio, unseen_splits
from .retrieval import recall_at_k_multi
from .zeroshot import class_embeddings, topk_hits

PAPER_TEMPLATES = ("{}",)  # the class name alone, as in the paper
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def check_templates(templates: Sequence[str]) -> list[str]:
    """Refuse an empty template list and templates without exactly one '{}' for the class name."""
    templates = list(templates)
    if not templates:
        raise InputError("no prompt templates given")
    for t in templates:
        if t.count("{}") != 1:
            raise InputError(f"prompt template {t!r} must hold '{{}}' exactly once, where the class name goes")
    return templates


@torch.no_grad()
def embed_image_files(model, paths: Sequence, batch_size: int = 32, progress: bool | None = None,
                      callback: Progress | None = None, boxes: Sequence | None = None) -> Tensor:
    """Image embeddings [n, d] (on the CPU, float32) of image files, read at the model's input size.

    boxes: per file, its boxes in the file's pixels (None: the grid), for models whose encode_image takes boxes.
    """
    if boxes is not None and "boxes" not in inspect.signature(model.encode_image).parameters:
        raise InputError(f"{type(model).__name__} takes no boxes; give a manifest without bbox")
    out = []
    for start in progress_bar(range(0, len(paths), batch_size), progress=progress, desc="images", unit="batch"):
        chunk = list(paths[start:start + batch_size])
        if boxes is None:
            emb = model.encode_image(load_images(chunk, model.image_size))
        else:
            pixels, scaled = load_images_with_boxes(chunk, boxes[start:start + batch_size], model.image_size,
                                                    RELEASE_MAX_BOXES)
            emb = model.encode_image(pixels, boxes=scaled)
        out.append(emb.float().cpu())
        if callback is not None:
            callback("images", min(start + batch_size, len(paths)), len(paths))
    return torch.cat(out)


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], batch_size: int = 128, progress: bool | None = None,
                callback: Progress | None = None) -> Tensor:
    """Text embeddings [n, d] (on the CPU, float32), in batches."""
    out = []
    for start in progress_bar(range(0, len(texts), batch_size), progress=progress, desc="texts", unit="batch"):
        out.append(model.encode_text(list(texts[start:start + batch_size])).float().cpu())
        if callback is not None:
            callback("texts", min(start + batch_size, len(texts)), len(texts))
    return torch.cat(out)


def split_accuracy(logits: Tensor, labels: Tensor, unseen: np.ndarray) -> float:
    """Top-1 accuracy (%) of the images of the unseen classes, classified among the unseen classes only."""
    unseen_t = torch.as_tensor(unseen, dtype=torch.long)
    rows = torch.isin(labels, unseen_t)
    if not rows.any():
        raise InputError("a split's unseen classes hold no images")
    pred = unseen_t[logits[rows][:, unseen_t].argmax(dim=1)]
    return 100.0 * (pred == labels[rows]).float().mean().item()


def zero_shot_classification(model, data: ClassFolders, ratios: Sequence[str | Ratio] | None = None, *,
                             n_splits: int = DEFAULT_SPLITS, seed: int = 0,
                             templates: Sequence[str] = PAPER_TEMPLATES, batch_size: int = 32,
                             progress: bool | None = None, callback: Progress | None = None) -> dict:
    """Zero-shot accuracy on class folders for each unseen/seen ratio (default: every class unseen, C/0).

    Images and class names are embedded once; each split only picks rows and columns of the logits, so 25 splits
    cost nothing extra. See `brivl.eval.protocol` for what a ratio means.
    """
    templates = check_templates(templates)
    c = data.n_classes
    ratios = [r if isinstance(r, Ratio) else parse_ratio(r, c) for r in (ratios or [f"{c}/0"])]
    for r in ratios:
        if r.classes != c:
            raise InputError(f"ratio {r} is for {r.classes} classes, but {data.root} has {c}")
    cls = class_embeddings(model, data.names, templates).float().cpu()
    img = embed_image_files(model, data.images, batch_size, progress, callback)
    logits = img @ cls.T
    labels = torch.tensor(data.labels)
    results = []
    for r in ratios:
        splits = unseen_splits(c, r, n_splits, seed)
        accs = [split_accuracy(logits, labels, u) for u in splits]
        results.append({"ratio": str(r), "unseen": r.unseen, "seen": r.seen, "splits": len(splits),
                        "mean": float(np.mean(accs)), "std": float(np.std(accs)) if r.seen else None,
                        "accuracies": accs, "unseen_classes": [[data.names[i] for i in u] for u in splits]})
    return {"task": "zeroshot", "data": str(data.root), "classes": data.names, "folders": data.folders,
            "n_images": len(data.images), "templates": templates, "seed": seed, "n_splits": n_splits,
            "results": results}


def text_classification(model, data: LabelledTexts, *, templates: Sequence[str] = PAPER_TEMPLATES,
                        batch_size: int = 128, progress: bool | None = None,
                        callback: Progress | None = None) -> dict:
    """Zero-shot text classification: each text goes to the class name whose embedding is nearest (cosine)."""
    templates = check_templates(templates)
    cls = class_embeddings(model, data.names, templates).float().cpu()
    txt = embed_texts(model, data.texts, batch_size, progress, callback)
    logits = txt @ cls.T
    labels = torch.tensor(data.labels)
    hits = topk_hits(logits, labels, ks=(1, min(5, len(data.classes))))
    pred = logits.argmax(dim=1)
    per_class = {}
    for i, name in enumerate(data.names):
        rows = labels == i
        per_class[name] = {"n": int(rows.sum()), "accuracy": 100.0 * (pred[rows] == i).float().mean().item()
                           if rows.any() else None}
    return {"task": "textcls", "data": str(data.source), "classes": data.classes, "names": data.names,
            "n_texts": len(data.texts), "templates": templates, "accuracy": hits["top1"], **hits,
            "per_class": per_class}


def retrieval(model, data: RetrievalSet, *, batch_size: int = 32, progress: bool | None = None,
              callback: Progress | None = None) -> dict:
    """Image->text and text->image Recall@1/5/10 and Recall@SUM; an image may have several captions."""
    img = embed_image_files(model, data.images, batch_size, progress, callback, boxes=data.boxes)
    txt = embed_texts(model, data.captions, max(batch_size, 64), progress, callback)
    metrics = recall_at_k_multi(img @ txt.T, data.caption_image)
    return {"task": "retrieval", "data": str(data.source), "boxes": "manifest" if data.boxes else "grid",
            "n_images": len(data.images),
            "n_captions": len(data.captions), **metrics}


# --- markdown tables shaped like the paper's -------------------------------------------------------------------

def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))] + [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def markdown_zeroshot(runs: Sequence[tuple[str, dict]]) -> str:
    """Fig. 4a/b: one row per method, one column per unseen/seen ratio, cells 'mean (std)' in %."""
    ratios: list[str] = []
    for _, res in runs:
        ratios += [r["ratio"] for r in res["results"] if r["ratio"] not in ratios]
    rows = []
    for method, res in runs:
        by = {r["ratio"]: r for r in res["results"]}
        rows.append([method] + [("-" if k not in by else f"{by[k]['mean']:.2f}" if by[k]["std"] is None
                                 else f"{by[k]['mean']:.2f} ({by[k]['std']:.2f})") for k in ratios])
    return _table(["Method"] + [f"{k} (unseen/seen)" for k in ratios], rows)


def markdown_textcls(runs: Sequence[tuple[str, str, dict]], per_class: bool = True) -> str:
    """Fig. 5a: one row per method, one column per data set (top-1 %); then Fig. 5b's per-category accuracies."""
    datasets: list[str] = []
    for _, name, _ in runs:
        if name not in datasets:
            datasets.append(name)
    methods: dict[str, dict[str, dict]] = {}
    for method, name, res in runs:
        methods.setdefault(method, {})[name] = res
    rows = [[m] + [f"{by[d]['accuracy']:.2f}" if d in by else "-" for d in datasets] for m, by in methods.items()]
    out = _table(["Method"] + datasets, rows)
    if per_class:
        for d in datasets:
            have = [(m, by[d]) for m, by in methods.items() if d in by]
            names = list(have[0][1]["per_class"])

            def acc(r: dict, n: str) -> float | None:
                return r["per_class"].get(n, {}).get("accuracy")

            rows = [[n, str(have[0][1]["per_class"][n]["n"])]
                    + ["-" if acc(r, n) is None else f"{acc(r, n):.2f}" for _, r in have] for n in names]
            out += f"\nPer category ({d}):\n\n" + _table(["Category", "texts"] + [m for m, _ in have], rows)
    return out


def markdown_retrieval(runs: Sequence[tuple[str, dict]]) -> str:
    """Fig. 6a / S2a: Image-to-Text and Text-to-Image Recall@1/5/10 and Recall@SUM, in %."""
    header = ["Method", "I2T Recall@1", "I2T Recall@5", "I2T Recall@10", "T2I Recall@1", "T2I Recall@5",
              "T2I Recall@10", "Recall@SUM"]
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "R@SUM"]
    return _table(header, [[m] + [f"{res[k]:.2f}" for k in keys] for m, res in runs])
