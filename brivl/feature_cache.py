"""Cached outputs of frozen backbones, so that training only the BriVL heads runs fast on a CPU.

With both backbones frozen, all the heads ever see of an image is the mean of each MSPP box's samples
of the CNN map ([37, C]) and of a text the backbone's last hidden states ([L, H]). They are computed
once (for a few augmented views per image), written in shards and read back by `FeatureCacheDataset`.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes, load_safetensors, save_safetensors
from .data import Augment, DataError, PairDataset, ResumableSampler, read_pairs
from .progress import bar as progress_bar

CACHE_FILE = "cache.json"
SHARD = 512  # pairs per image shard


def cache_signature(model) -> dict[str, Any]:
    """What a cache depends on: the backbones and everything before the heads."""
    im, tx = model.config.image, model.config.text
    return {"image": [im.backbone, im.backbone_weights, im.image_size, list(im.mean), list(im.std), im.box_grid,
                      im.grid_size],
            "text": [tx.backbone.get("model_type"), tx.hidden_size, tx.backbone_weights, tx.max_len, tx.prefix,
                     tx.use_attention_mask]}


def is_feature_cache(path: str | Path) -> bool:
    """True for a folder written by build_feature_cache."""
    return (Path(path) / CACHE_FILE).is_file()


@torch.no_grad()
def build_feature_cache(model, source: str | Path, out: str | Path, views: int = 2, seed: int = 0,
                        batch_size: int = 32, augment: Augment | None = None, progress: bool = True,
                        teacher: Callable[[Tensor], Tensor] | None = None,
                        labels: list[list[str]] | None = None) -> Path:
    """Write box means of `views` augmented views of every image, and text hidden states, to `out` (resumable).

    For distillation, `teacher(feature map) -> logits [n, C]` is stored for every view: it receives the image
    tower's CNN map [n, C', h, w] (`imgencoder.feature_map`), so a classifier head on the same backbone (e.g.
    `imgencoder.backbone.forward_head`) costs no second forward pass. `labels` (C lists of prompts, the same
    number for every class) are cached as text hidden states.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    pairs = read_pairs(source)
    dataset = PairDataset(pairs, model.image_size, augment or Augment(), seed=seed)
    texts = sorted({p.text for p in pairs if p.text.strip()})
    text_index = {t: i for i, t in enumerate(texts)}
    if not (out / "texts.safetensors").is_file():
        _cache_texts(model, texts, out / "texts.safetensors", batch_size, progress, "caching texts")
        atomic_write_bytes(out / "texts.json", json.dumps(texts, ensure_ascii=False).encode())
    if labels is not None and not (out / "labels.safetensors").is_file():
        per_class = {len(prompts) for prompts in labels}
        if len(per_class) != 1 or 0 in per_class:
            raise DataError("every class needs the same, non-zero number of label prompts")
        flat = [t for prompts in labels for t in prompts]
        _cache_texts(model, flat, out / "labels.safetensors", batch_size, progress, "caching label prompts")
        atomic_write_bytes(out / "labels.json", json.dumps(labels, ensure_ascii=False).encode())
    n_shards = (len(pairs) + SHARD - 1) // SHARD
    for shard in progress_bar(range(n_shards), progress=progress, desc="caching images"):
        path = out / f"images-{shard:05d}.safetensors"
        if path.is_file():
            continue  # written by an earlier, interrupted run
        lo, hi = shard * SHARD, min(len(pairs), (shard + 1) * SHARD)
        means, text_ids, logits = [], [], []
        for start in range(lo, hi, batch_size):
            idx = list(range(start, min(hi, start + batch_size)))
            per_view, per_view_logits = [], []
            for view in range(views):
                items = [dataset.get(i, view) for i in idx]
                fmap = model.imgencoder.feature_map(torch.stack([im for im, _ in items]))
                per_view.append(model.imgencoder.box_means(feature_map=fmap).half())
                if teacher is not None:
                    per_view_logits.append(teacher(fmap).float())
                if view == 0:
                    text_ids += [text_index[t] for _, t in items]
            means.append(torch.stack(per_view, dim=1))  # [b, views, 37, C]
            if teacher is not None:
                logits.append(torch.stack(per_view_logits, dim=1))  # [b, views, classes]
        shard_data = {"box_means": torch.cat(means), "text_ids": torch.tensor(text_ids)}
        if teacher is not None:
            shard_data["teacher_logits"] = torch.cat(logits).half()
        save_safetensors(shard_data, path)
    record = {"signature": cache_signature(model), "pairs": len(pairs), "views": views, "shards": n_shards,
              "texts": len(texts), "source": str(source), "seed": seed, "skipped": dict(dataset.skipped),
              "teacher": teacher is not None, "labels": None if labels is None else [len(labels), len(labels[0])]}
    atomic_write_bytes(out / CACHE_FILE, json.dumps(record, indent=2).encode())
    return out


def _cache_texts(model, texts: list[str], path: Path, batch_size: int, progress: bool, desc: str) -> None:
    hidden, offsets = [], [0]
    for start in progress_bar(range(0, len(texts), batch_size), progress=progress, desc=desc):
        tok = model.tokenize(texts[start:start + batch_size], warn=False)
        tok.pop("truncated")
        states = model.textencoder.hidden_states(**tok).half()
        for row, mask in zip(states, tok["attention_mask"]):
            n = int(mask.sum())
            hidden.append(row[:n])
            offsets.append(offsets[-1] + n)
    save_safetensors({"hidden": torch.cat(hidden), "offsets": torch.tensor(offsets)}, path)


def _padded(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack variable-length [L, H] rows into (hidden [n, L_max, H], attention mask [n, L_max])."""
    longest = max(r.shape[0] for r in rows)
    hidden = torch.zeros(len(rows), longest, rows[0].shape[1])
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        hidden[i, :r.shape[0]] = r
        mask[i, :r.shape[0]] = 1
    return hidden, mask


class FeatureCacheDataset:
    """Cached pairs: item i in epoch e is view (e mod views) of image i with its text's hidden states."""

    def __init__(self, folder: str | Path, model=None):
        self.folder = Path(folder)
        self.record = json.loads((self.folder / CACHE_FILE).read_text())
        if model is not None and self.record["signature"] != json.loads(json.dumps(cache_signature(model))):
            raise DataError(f"{self.folder} was cached for other backbones or settings "
                            f"({self.record['signature']}); rebuild it for this model")
        shards = [load_safetensors(self.folder / f"images-{s:05d}.safetensors") for s in range(self.record["shards"])]
        self.box_means = torch.cat([s["box_means"] for s in shards])
        self.text_ids = torch.cat([s["text_ids"] for s in shards])
        self.teacher_logits = (torch.cat([s["teacher_logits"] for s in shards]) if self.record.get("teacher")
                               else None)  # [N, views, classes]
        self.label_hidden = self.label_offsets = None
        self.label_shape = self.record.get("labels")  # [classes, prompts per class]
        if self.label_shape:
            lab = load_safetensors(self.folder / "labels.safetensors")
            self.label_hidden, self.label_offsets = lab["hidden"], lab["offsets"]
        texts = load_safetensors(self.folder / "texts.safetensors")
        self.hidden, self.offsets = texts["hidden"], texts["offsets"]
        self.views = self.record["views"]
        self.skipped: Counter[str] = Counter(self.record.get("skipped", {}))
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.text_ids)

    def get(self, index: int, epoch: int) -> tuple[Tensor, Tensor]:
        """(box means [37, C] of this epoch's view, hidden states [L, H] of the pair's text), as float32."""
        t = int(self.text_ids[index])
        return (self.box_means[index, epoch % self.views].float(),
                self.hidden[int(self.offsets[t]):int(self.offsets[t + 1])].float())

    def labels(self, classes: Tensor, prompts: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states and mask of prompt `prompts[i]` of class `classes[i]` (needs a cache built with labels)."""
        if not self.label_shape:
            raise DataError(f"{self.folder} holds no label prompts: rebuild it with labels for distillation")
        per_class = self.label_shape[1]
        rows = [self.label_hidden[int(self.label_offsets[k]):int(self.label_offsets[k + 1])].float()
                for k in (classes * per_class + prompts).tolist()]
        return _padded(rows)


def cache_batches(dataset: FeatureCacheDataset, sampler: ResumableSampler) -> Iterator[dict[str, Tensor]]:
    """Endless stream of model inputs {box_means, hidden, attention_mask[, teacher_logits]} for this process."""
    while True:
        epoch, indices = sampler.next_indices()
        items = [dataset.get(i, epoch) for i in indices]
        hidden, mask = _padded([h for _, h in items])
        batch = {"box_means": torch.stack([b for b, _ in items]), "hidden": hidden, "attention_mask": mask}
        if dataset.teacher_logits is not None:
            batch["teacher_logits"] = dataset.teacher_logits[torch.tensor(indices), epoch % dataset.views].float()
        yield batch
