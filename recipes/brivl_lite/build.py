"""`brivl build-default` (recipe version 2): brivl-lite's heads in the classifier space of its image backbone.

Stages, each resumable under the work folder:
1. corpus  - every ImageNet class named many ways, English and Chinese, plus two-class sentences
             (`recipes.brivl_lite.text_corpus`); the held-out cross-lingual sentences are left out;
2. cache   - the frozen e5 backbone's hidden states of every text (`recipes.brivl_lite.text_head.cache_hidden_states`);
3. image   - the image head in closed form: its embedding is the MSPP-pooled feature direction plus a constant
             (`recipes.brivl_lite.classifier_space.set_image_head`); its constant K is measured on procedural images;
4. text    - the text head trained onto the classifier's class targets [W_k - w; b_k - b; z_k] / R, then its
             last layer refit in closed form (ridge regression onto the same targets);
5. export  - the heads as fp16 safetensors + config (the package's brivl-lite);
6. eval    - teacher agreement on the held-out real photos, held-out sentence accuracy, cross-lingual Recall@1.

Recipe version 1 (MoCo + distillation on DeepInversion images, `recipes.brivl_lite.recipe`) reached 35.1% teacher
top-1 and rendered the same texture for every prompt (issue 15); its numbers stay in the README for comparison.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from brivl.checkpoint import atomic_write_bytes
from brivl.config import BriVLConfig, ConfigError
from brivl.describe import DESCRIPTION_NAME, description_record

VERSION = 2


@dataclass
class LiteBuildConfig:
    """What `brivl build-default` makes and how long it trains (configs/build-lite.yaml)."""

    version: int = VERSION
    work: str = "build/brivl-lite-v3"  # corpus, text and anchor caches, text-head checkpoints, report
    out: str = ""  # where the heads go; "" = the installed package's brivl-lite folder
    classes: int = 1000  # the first N of a seeded permutation of the ImageNet classes (tiny builds use a few)
    pairs: int = 10000  # two-class sentences
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    temperature: float = 0.03  # of the cross-entropy over class targets
    cosine_weight: float = 4.0  # weight of 1 - cos(text, its target) (configs/build-lite.yaml says why)
    refit_ridge: float = 1e-3  # then the text MLP's last layer by ridge regression onto the targets (0 = keep)
    anchors_zh: int = 20000  # general Chinese phrases (jieba, ranks 5,000 on) whose neighbourhoods the head keeps
    anchors_en: int = 6000  # general English words (open_clip's BPE vocabulary, most frequent first)
    anchor_batch: int = 128  # anchors per step
    structure_weight: float = 1.0  # weight of the anchors' structure term (0 = none)
    structure_temperature: float = 0.04  # of the head's neighbour distribution
    structure_ref_temperature: float = 0.01  # of the backbone's
    text_mlp_hidden: int = 2048
    image_att_layers: int = 0  # the image self-attention would be an exact identity (14.5 MB a layer): none
    image_att_ff_dim: int = 256
    scale_images: int = 32  # procedural images that set the image head's constant K
    seed: int = 0
    eval_crops: int = 8  # random crops per held-out photo, besides the whole photo
    threads: int = 0  # torch threads (0 = torch's default)

    @classmethod
    def load(cls, path: str | Path) -> LiteBuildConfig:
        """Read a YAML build config, refusing unknown keys by name."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a build config is a mapping of options, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown build option(s): {', '.join(unknown)}")
        cfg = cls(**data)
        if cfg.version != VERSION:
            raise ConfigError(f"{path} is a version-{cfg.version} recipe; this loader reads version {VERSION}")
        for name in ("anchors_zh", "anchors_en", "anchor_batch"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(cfg, name)!r}")
        for name in ("structure_temperature", "structure_ref_temperature"):
            if not getattr(cfg, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(cfg, name)!r}")
        for name in ("classes", "steps", "batch_size", "text_mlp_hidden", "scale_images"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
        if not isinstance(cfg.image_att_layers, int) or cfg.image_att_layers < 0:
            raise ConfigError(f"image_att_layers must be an integer >= 0, got {cfg.image_att_layers!r}")
        if not 2 <= cfg.classes <= 1000:
            raise ConfigError(f"classes must be 2-1000, got {cfg.classes}")
        return cfg


def model_config(cfg: LiteBuildConfig) -> BriVLConfig:
    """brivl-lite's layout for this recipe: the joint and patch widths the classifier space needs."""
    from brivl.config import preset

    model = preset("brivl-lite")
    model.text.mlp_hidden = cfg.text_mlp_hidden
    model.image.att_layers, model.image.att_ff_dim = cfg.image_att_layers, cfg.image_att_ff_dim
    model.validate()
    return model


def chosen_classes(cfg: LiteBuildConfig) -> list[int]:
    """The classes the text head learns: all 1000, or a seeded subset for small builds."""
    if cfg.classes >= 1000:
        return list(range(1000))
    return sorted(torch.randperm(1000, generator=torch.Generator().manual_seed(cfg.seed))[:cfg.classes].tolist())


def stage_corpus(cfg: LiteBuildConfig, work: Path):
    """The training texts (rebuilt from code each run: deterministic, and checked against the cache's record)."""
    from .text_corpus import build_corpus

    corpus = build_corpus(chosen_classes(cfg), pairs=cfg.pairs, seed=cfg.seed)
    atomic_write_bytes(work / "corpus.jsonl", "".join(
        json.dumps({"text": t.text, "classes": list(t.classes)}, ensure_ascii=False) + "\n" for t in corpus).encode())
    return corpus


def stage_image_head(cfg: LiteBuildConfig, model) -> float:
    """Set the closed-form image head; returns its constant K (from procedural images, never the held-out photos)."""
    from .classifier_space import image_scale, set_image_head
    from .synthesis import procedural_images

    images = procedural_images(cfg.scale_images, model.image_size, seed=cfg.seed + 31)
    with torch.no_grad():
        box_means = model.imgencoder.box_means(images)
    scale = image_scale(box_means)
    set_image_head(model.imgencoder, scale)
    return scale


def stage_text_head(cfg: LiteBuildConfig, model, corpus, work: Path, progress: bool) -> dict[str, Any]:
    """Cache the backbone's hidden states, then train the text head onto the class targets (both resumable)."""
    from .classifier_space import class_targets
    from .text_head import HiddenCache, cache_hidden_states, refit_output_layer, soft_labels, train_text_head

    texts = [t.text for t in corpus]
    folder = cache_hidden_states(model, texts, work / "text-cache", progress=progress)
    clf = model.imgencoder.backbone.get_classifier()
    targets = class_targets(clf.weight.detach(), clf.bias.detach())
    cache, labels = HiddenCache(folder, texts), soft_labels(corpus, 1000)
    anchors = stage_anchors(cfg, model, set(texts), work, progress)
    last = train_text_head(model, cache, labels, targets, work / "text-head", steps=cfg.steps,
                           batch=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup_steps, temperature=cfg.temperature,
                           cosine_weight=cfg.cosine_weight, seed=cfg.seed, anchors=anchors,
                           anchor_batch=cfg.anchor_batch, structure_weight=cfg.structure_weight,
                           structure_temperatures=(cfg.structure_temperature, cfg.structure_ref_temperature),
                           save_every=max(1, min(200, cfg.steps)), progress=progress)
    if cfg.refit_ridge > 0:
        # Fit on the layers below as they ship (fp16), so the least-squares layer is exact for the shipped ones.
        with torch.no_grad():
            for p in model.textencoder.learnable.parameters():
                p.copy_(p.half().float())
        last["refit"] = refit_output_layer(model, cache, labels, targets, ridge=cfg.refit_ridge)
    return last


def stage_anchors(cfg: LiteBuildConfig, model, corpus_texts: set[str], work: Path, progress: bool):
    """The general phrases' cached hidden states (None without a structure term); texts of the corpus are left out."""
    from .text_corpus import anchor_phrases
    from .text_head import HiddenCache, cache_hidden_states

    if cfg.structure_weight <= 0 or not (cfg.anchors_zh or cfg.anchors_en):
        return None
    phrases = [a for a in anchor_phrases(model.tokenizer, cfg.anchors_zh, cfg.anchors_en) if a not in corpus_texts]
    atomic_write_bytes(work / "anchors.txt", "\n".join(phrases).encode())
    return HiddenCache(cache_hidden_states(model, phrases, work / "anchor-cache", progress=progress), phrases)


@torch.no_grad()
def heldout_sentence_accuracy(model, classes: list[int] | None = None) -> dict[str, float]:
    """Class accuracy of the held-out parallel sentences (never trained on) against the class prompts."""
    from brivl.eval.zeroshot import class_embeddings
    from brivl.lite.efficientnet_lite import short_class_names
    from .recipe import heldout_sentence_pairs, sentence_pair

    pairs = [(t, c) for t, c in heldout_sentence_pairs() if classes is None or c in classes]
    if not pairs:
        return {"en": float("nan"), "zh": float("nan"), "sentences": 0}
    names = short_class_names()
    pool = list(range(1000)) if classes is None else sorted(classes)
    proto = class_embeddings(model, [names[c] for c in pool])
    truth = torch.tensor([pool.index(c) for _, c in pairs])
    out = {}
    for k, lang in enumerate(("en", "zh")):
        emb = model.encode_text([sentence_pair(t, c)[k] for t, c in pairs])
        out[lang] = round(100.0 * float(((emb @ proto.T).argmax(-1) == truth).float().mean()), 1)
    return {**out, "sentences": len(pairs)}


def stage_eval(cfg: LiteBuildConfig, out: Path) -> dict[str, Any]:
    """Teacher agreement, held-out sentence accuracy and cross-lingual retrieval of the exported model."""
    from brivl.hub import load
    from .evaluate import cross_lingual_retrieval
    from .heldout import teacher_agreement

    t0 = time.perf_counter()
    model = load(out)
    load_s = time.perf_counter() - t0
    teacher = teacher_agreement(model, crops_per_photo=cfg.eval_crops, seed=cfg.seed)
    classes = None if cfg.classes >= 1000 else chosen_classes(cfg)
    return {"teacher_top1": teacher["top1"], "teacher_top5": teacher["top5"], "images": teacher["images"],
            "heldout_sentences": heldout_sentence_accuracy(model, classes),
            "cross_lingual": cross_lingual_retrieval(model), "load_s": round(load_s, 2)}


def write_description(out: Path) -> None:
    """Store what `brivl info` prints for the heads just written, so that it answers without torch (brivl.describe)."""
    from brivl.commands import model_rows
    from brivl.hub import load

    atomic_write_bytes(out / DESCRIPTION_NAME, description_record(out, model_rows(load(out))))


def build_default(cfg: LiteBuildConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage (finished ones are skipped); returns the evaluation, also written to report.json."""
    from brivl.hub import LITE_FOLDER
    from brivl.model.brivl import BriVL
    from brivl.lite.assemble import with_package_backbones

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(work / "build_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    timings: dict[str, float] = {}
    t = time.perf_counter()
    corpus = stage_corpus(cfg, work)
    torch.manual_seed(cfg.seed)  # the heads' random start
    model = with_package_backbones(BriVL(model_config(cfg))).eval()
    scale = stage_image_head(cfg, model)
    timings["corpus_image_s"] = time.perf_counter() - t
    t = time.perf_counter()
    last = stage_text_head(cfg, model, corpus, work, progress)
    timings["text_s"] = time.perf_counter() - t
    out = Path(cfg.out) if cfg.out else LITE_FOLDER
    model.save_pretrained(out, backbones=False, dtype=torch.float16)
    write_description(out)
    report = {**stage_eval(cfg, out), "recipe_version": VERSION, "texts": len(corpus), "image_scale": round(scale, 3),
              "last_step": last, **{k: round(v, 1) for k, v in timings.items()}, "out": str(out)}
    atomic_write_bytes(work / "report.json", json.dumps(report, indent=2, ensure_ascii=False).encode())
    return report
