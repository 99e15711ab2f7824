"""Recipe version 1 of brivl-lite (retired; version 2 is `recipes.brivl_lite.build`): data-free distillation.

Kept because its images feed `brivl build-vqgan` and its numbers are the README's baseline
(`brivl build-default --config configs/build-lite-v1.yaml` still runs it).

Stages, each resumable and written under the work folder:
1. images  - synthetic class images (DeepInversion on the EfficientNet-Lite0 classifier), 2x2 mosaics of them
             (several objects per picture, as in photos) and procedural images;
2. label   - captions from the classifier's top-1 ImageNet class name, through varied templates, in Chinese
             for the classes with a Chinese name (recipes.brivl_lite.zh) some of the time;
3. cache   - frozen-backbone outputs of a few augmented views (crops, colour) per image, the teacher's logits
             for each view and label prompts for every class (brivl.feature_cache);
4. train   - cross-modal MoCo on the heads only (brivl.train, DeepSpeed), plus distillation of the teacher's
             class distribution into the image-to-label-prompt similarities (measured in bench/lite.py);
   refine  - a second run from the first one's heads with a larger batch, a cosine schedule and the distillation
             term weighted up (`refine:` in the config; measured on the shipped build: held-out teacher top-5
             15.8% after the first run, 36.3% after 800 refine steps);
   align   - the image head set in closed form: the teacher's linear classifier mapped into the text head's
             space through the least-squares fit of its logits by the class-prompt embeddings
             (recipes.brivl_lite.teacher_init); held-out teacher top-5 36.3% -> 71.9% ("a photo of a {}.") on the
             shipped build, since heads trained on synthetic images generalise to real photos far less well
             than the teacher's own map; KD fine-tuning after it on the synthetic cache lost that again (76 -> 9%
             in 25 steps at lr 1e-5), so it comes last;
5. export  - the heads as fp16 safetensors + config (the package's brivl-lite);
6. eval    - zero-shot agreement with the teacher on the held-out real photos (never trained on).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from brivl.progress import bar as progress_bar

from brivl.checkpoint import atomic_write_bytes
from brivl.config import ConfigError, brivl_lite_v1
from brivl.data import Augment
from brivl.feature_cache import FeatureCacheDataset, build_feature_cache, is_feature_cache
from brivl.hub import LITE_FOLDER, load
from brivl.images import load_image
from brivl.lite.assemble import with_package_backbones
from brivl.lite.efficientnet_lite import load_efficientnet_lite, preprocess_efficientnet_lite, short_class_names
from brivl.model.brivl import BriVL
from brivl.train import TrainConfig, Trainer, latest_checkpoint

from .distill import Distill
from .heldout import teacher_agreement
from .synthesis import procedural_images, synthesize
from .teacher_init import init_image_head_from_classifier
from .zh import PARALLEL_TEMPLATES, ZH_CLASS_NAMES

log = logging.getLogger("brivl.build")
# English-only templates besides the parallel ones (recipes.brivl_lite.zh).
EXTRA_TEMPLATES = ("an image of a {}.", "a {} in the picture.", "{}", "a photo of the {}, seen up close.")
LABEL_PROMPTS_EN = ("a photo of a {}.", "a picture of a {}.", "{}", "a close-up photo of a {}.")
LABEL_PROMPTS_ZH = ("一张{}的照片。", "{}")


def heldout_sentence_pairs(n: int = 200, seed: int = 1234) -> list[tuple[int, int]]:
    """(parallel template index, class) pairs whose English and Chinese sentences are never trained on."""
    g = torch.Generator().manual_seed(seed)
    classes = sorted(ZH_CLASS_NAMES)
    combos = [(t, c) for t in range(len(PARALLEL_TEMPLATES)) for c in classes]
    order = torch.randperm(len(combos), generator=g)[:n].tolist()
    return [combos[i] for i in order]


def sentence_pair(template: int, cls: int) -> tuple[str, str]:
    """The English and Chinese sentence of a parallel template filled with a class name."""
    en, zh = PARALLEL_TEMPLATES[template]
    return en.format(short_class_names()[cls]), zh.format(ZH_CLASS_NAMES[cls])


def label_prompts(names: list[str], per_class: int = 4) -> list[list[str]]:
    """`per_class` distillation prompts per class: English, and half Chinese where the class has a Chinese name."""
    if not 1 <= per_class <= len(LABEL_PROMPTS_EN):
        raise ConfigError(f"label_prompts must be 1-{len(LABEL_PROMPTS_EN)}, got {per_class}")
    out = []
    for k, name in enumerate(names):
        english = [t.format(name) for t in LABEL_PROMPTS_EN]
        if k in ZH_CLASS_NAMES:
            n_zh = min(per_class // 2, len(LABEL_PROMPTS_ZH))
            chinese = [t.format(ZH_CLASS_NAMES[k]) for t in LABEL_PROMPTS_ZH[:n_zh]]
            out.append(english[:per_class - n_zh] + chinese)
        else:
            out.append(english[:per_class])
    return out


REFINE_KEYS = ("steps", "batch_size", "lr", "distill_weight", "warmup_steps")


@dataclass
class BuildConfig:
    """What `brivl build-default` makes and how long it trains (configs/build-lite.yaml)."""

    version: int = 1  # configs/build-lite-v1.yaml says so; a config without it is read as version 2
    work: str = "build/brivl-lite"  # images, manifest, cache, training run
    out: str = ""  # where the heads go; "" = the installed package's brivl-lite folder
    synth_per_class: int = 2  # DeepInversion images per ImageNet class (0 = none)
    synth_classes: int = 1000  # the first N classes of a seeded permutation of the 1000
    synth_size: int = 160
    synth_steps: int = 200
    synth_batch: int = 16
    mosaics: int = 1000  # 2x2 mosaics of synthetic images
    procedural: int = 2000  # procedural images (gradients, textures, shapes)
    procedural_size: int = 160
    zh_share: float = 0.4  # share of Chinese captions for the classes with a Chinese name
    views: int = 4  # augmented views cached per image
    crop_scale: tuple[float, float] = (0.4, 1.0)  # random square crops of the views (share of the side)
    steps: int = 3000
    batch_size: int = 64
    queue_size: int = 4096
    lr: float = 3e-4
    warmup_steps: int = 100
    temperature: float = 0.07
    distill_weight: float = 1.0  # 0 = MoCo alone
    distill_classes: int = 256
    label_prompts: int = 4  # prompts per class for distillation (English, half Chinese where named)
    seed: int = 0
    eval_crops: int = 8  # random crops per held-out photo, besides the whole photo
    refine: dict[str, Any] = dataclasses.field(default_factory=dict)  # {steps, batch_size, lr, distill_weight}; {} = none
    align: bool = True  # the image head from the teacher's classifier after training (teacher_init)

    @classmethod
    def load(cls, path: str | Path) -> BuildConfig:
        """Read a YAML build config, refusing unknown keys by name."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown build option(s): {', '.join(unknown)}")
        if "crop_scale" in data:
            data["crop_scale"] = tuple(float(v) for v in data["crop_scale"])
        bad = sorted(set(data.get("refine") or {}) - set(REFINE_KEYS))
        if bad:
            raise ConfigError(f"unknown refine option(s): {', '.join(bad)}; known: {', '.join(REFINE_KEYS)}")
        return cls(**data)


def _done(path: Path) -> bool:
    return path.is_file()


def stage_images(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Write synthetic and procedural images as PNGs (batches already on disk are skipped)."""
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(cfg.seed))[:cfg.synth_classes].tolist()
    targets = [c for _ in range(cfg.synth_per_class) for c in order]
    teacher = load_efficientnet_lite(0)
    batches = [targets[i:i + cfg.synth_batch] for i in range(0, len(targets), cfg.synth_batch)]
    for b, classes in enumerate(progress_bar(batches, progress=progress, desc="synthesising class images")):
        last = folder / f"synth-{b:05d}-{len(classes) - 1:02d}.png"
        if _done(last):
            continue
        images = synthesize(teacher, classes, size=cfg.synth_size, steps=cfg.synth_steps, seed=cfg.seed + b)
        for j, img in enumerate(images):
            _save_png(img, folder / f"synth-{b:05d}-{j:02d}.png")
    _write_mosaics(cfg, folder, progress)
    chunk = 256
    for start in progress_bar(range(0, cfg.procedural, chunk), progress=progress, desc="procedural images"):
        n = min(chunk, cfg.procedural - start)
        if _done(folder / f"proc-{start + n - 1:06d}.png"):
            continue
        for j, img in enumerate(procedural_images(n, cfg.procedural_size, seed=cfg.seed * 7919 + start)):
            _save_png(img, folder / f"proc-{start + j:06d}.png")
    return folder


def _write_mosaics(cfg: BuildConfig, folder: Path, progress: bool) -> None:
    """2x2 grids of four random synthetic images, each at half size (seeded; existing files are kept)."""
    synth = sorted(folder.glob("synth-*.png"))
    if len(synth) < 4 or cfg.mosaics <= 0:
        return
    g = torch.Generator().manual_seed(cfg.seed + 17)
    picks = [torch.randperm(len(synth), generator=g)[:4].tolist() for _ in range(cfg.mosaics)]
    half = cfg.synth_size // 2
    for i, four in enumerate(progress_bar(picks, progress=progress, desc="mosaics")):
        path = folder / f"mosaic-{i:05d}.png"
        if _done(path):
            continue
        tiles = [torch.nn.functional.interpolate(load_image(synth[j])[None], size=(half, half), mode="bilinear",
                                                 antialias=True, align_corners=False)[0] for j in four]
        _save_png(torch.cat([torch.cat(tiles[:2], 2), torch.cat(tiles[2:], 2)], 1), path)


def _save_png(img: torch.Tensor, path: Path) -> None:
    array = (img.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(array).save(tmp)
    tmp.replace(path)


@torch.no_grad()
def stage_label(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Caption every image with the teacher's top-1 class name through a seeded template; write manifest.jsonl."""
    manifest = work / "manifest.jsonl"
    if _done(manifest):
        return manifest
    teacher, names = load_efficientnet_lite(0), short_class_names()
    files = sorted((work / "images").glob("*.png"))
    g = torch.Generator().manual_seed(cfg.seed)
    heldout = set(heldout_sentence_pairs())
    rows, confidences = [], []
    for start in progress_bar(range(0, len(files), 64), progress=progress, desc="labelling"):
        chunk = files[start:start + 64]
        pixels = torch.cat([preprocess_efficientnet_lite(load_image(f)[None], crop_pct=1.0) for f in chunk])
        probs = teacher(pixels).softmax(-1)
        conf, top = probs.max(-1)
        for f, c, k in zip(chunk, conf.tolist(), top.tolist()):
            rows.append({"image": f"images/{f.name}", "text": _caption(k, names, cfg.zh_share, heldout, g),
                         "class": k, "confidence": round(c, 4)})
            confidences.append(c)
    atomic_write_bytes(manifest, "".join(json.dumps(r) + "\n" for r in rows).encode())
    classes = {r["class"] for r in rows}
    log.info("labelled %d images: %d distinct teacher classes, mean confidence %.3f", len(rows), len(classes),
             sum(confidences) / max(1, len(confidences)))
    return manifest


def _caption(cls: int, names: list[str], zh_share: float, heldout: set[tuple[int, int]],
             g: torch.Generator) -> str:
    """A caption of class `cls`: a random template, Chinese with probability zh_share where a name exists.

    Parallel (template, class) combinations held out for the cross-lingual test are drawn again.
    """
    n_parallel, n_all = len(PARALLEL_TEMPLATES), len(PARALLEL_TEMPLATES) + len(EXTRA_TEMPLATES)
    chinese = cls in ZH_CLASS_NAMES and float(torch.rand((), generator=g)) < zh_share
    while True:
        t = int(torch.randint(n_parallel if chinese else n_all, (), generator=g))
        if t >= n_parallel or (t, cls) not in heldout:
            break
    if t >= n_parallel:
        return EXTRA_TEMPLATES[t - n_parallel].format(names[cls])
    return PARALLEL_TEMPLATES[t][1].format(ZH_CLASS_NAMES[cls]) if chinese else PARALLEL_TEMPLATES[t][0].format(names[cls])


def stage_cache(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Frozen-backbone outputs, teacher logits for `views` augmented views of each image, and label prompts."""
    folder = work / "cache"
    if is_feature_cache(folder):
        return folder
    model = with_package_backbones(BriVL(brivl_lite_v1())).eval()
    # The image backbone is the teacher itself (the packaged EfficientNet-Lite0 with its ImageNet classifier,
    # same 0.5/0.5 normalisation at 224 px): its head on the cached feature map gives the teacher's logits.
    return build_feature_cache(model, work / "manifest.jsonl", folder, views=cfg.views, seed=cfg.seed,
                               augment=Augment(crop_scale=cfg.crop_scale), progress=progress,
                               teacher=model.imgencoder.backbone.forward_head,
                               labels=label_prompts(short_class_names(), cfg.label_prompts))


def _train_heads(cfg: BuildConfig, work: Path, output: str, model: str, progress: bool, distill_weight: float,
                 **options: Any) -> Path:
    """One resumable Trainer run on the feature cache, backbones frozen; `options` override the first run's settings.

    Distillation (recipes.brivl_lite.distill) is an extra loss term of the run when distill_weight > 0.
    """
    settings = {
        "data": str(work / "cache"), "output": str(work / output), "model": model, "loss": "moco",
        "steps": cfg.steps, "batch_size": cfg.batch_size, "queue_size": cfg.queue_size, "lr": cfg.lr,
        "warmup_steps": cfg.warmup_steps, "temperature": cfg.temperature, "seed": cfg.seed,
        "save_every": max(1, min(500, cfg.steps)), "augment": False,
        "freeze": {"cnn_blocks": [], "text_layers": 0, "fix_bn": True}}
    if model == "brivl-lite":  # this recipe's 384-d layout, not the preset's (recipe version 2's)

        v1 = brivl_lite_v1()
        settings["model_overrides"] = {"embed_dim": v1.embed_dim, "image": {
            k: getattr(v1.image, k) for k in ("patch_dim", "att_layers", "att_ff_dim", "mlp_hidden")},
            "text": {"mlp_hidden": v1.text.mlp_hidden}}
    tc = TrainConfig.from_dict({**settings, **options})
    resume = latest_checkpoint(tc.output) is not None
    extra = [Distill.from_dict({"weight": distill_weight, "classes": cfg.distill_classes})] if distill_weight > 0 else []
    Trainer(tc, resume=resume, extra_losses=extra).run(progress=progress)
    return latest_checkpoint(tc.output) / "model"


def stage_train(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """MoCo on the heads, backbones frozen, from the feature cache (resumes an interrupted run)."""
    return _train_heads(cfg, work, "run", "brivl-lite", progress, cfg.distill_weight)


def stage_refine(cfg: BuildConfig, work: Path, trained: Path, progress: bool = True) -> Path:
    """A second run from the first run's heads: larger batch, cosine schedule, distillation weighted up (resumable)."""
    r = cfg.refine
    steps = int(r.get("steps", 0))
    if steps <= 0:
        return trained
    return _train_heads(
        cfg, work, "run-refine", str(trained), progress, float(r.get("distill_weight", cfg.distill_weight)), steps=steps,
        batch_size=int(r.get("batch_size", cfg.batch_size)), lr=float(r.get("lr", cfg.lr)),
        warmup_steps=int(r.get("warmup_steps", 20)), schedule="cosine", seed=cfg.seed + 1,
        save_every=max(1, min(100, steps)))


@torch.no_grad()
def class_prompt_embeddings(model, cache: Path, batch: int = 250) -> torch.Tensor:
    """Each class's mean text embedding over its cached label prompts [classes, d], unit length."""
    ds = FeatureCacheDataset(cache)
    if not ds.label_shape:
        raise ConfigError(f"{cache} holds no label prompts; the align stage needs a cache built with labels")
    n_classes, per_class = ds.label_shape
    text = model.textencoder.eval()
    total = torch.zeros(n_classes, model.config.embed_dim)
    for p in range(per_class):
        for start in range(0, n_classes, batch):
            classes = torch.arange(start, min(start + batch, n_classes))
            hidden, mask = ds.labels(classes, torch.full_like(classes, p))
            total[classes] += text(None, mask, hidden)
    return torch.nn.functional.normalize(total, dim=-1)


def stage_align(cfg: BuildConfig, work: Path, trained: Path) -> Path:
    """The image head from the teacher's classifier and the trained text head's class prompts (teacher_init)."""
    if not cfg.align:
        return trained
    out = work / "aligned"
    # Keyed by the run it starts from, so a retrained text head is never paired with a stale image head.
    source = out / "source.txt"
    if (out / "model.safetensors").is_file() and source.is_file() and source.read_text() == str(trained):
        return out
    model = load(trained).eval()
    classifier = model.imgencoder.backbone.get_classifier()
    init_image_head_from_classifier(model.imgencoder, classifier.weight, classifier.bias,
                                    class_prompt_embeddings(model, work / "cache"))
    model.save_pretrained(out, backbones=False)
    atomic_write_bytes(source, str(trained).encode())
    return out


def stage_export(cfg: BuildConfig, trained: Path) -> Path:
    """Write the heads (fp16) and config where `brivl.load("brivl-lite")` finds them."""
    out = Path(cfg.out) if cfg.out else LITE_FOLDER
    load(trained).save_pretrained(out, backbones=False, dtype=torch.float16)
    return out


def stage_eval(cfg: BuildConfig, out: Path) -> dict[str, Any]:
    """Teacher agreement of the exported model on the held-out photos."""
    t0 = time.perf_counter()
    model = load(out)
    load_s = time.perf_counter() - t0
    result = teacher_agreement(model, crops_per_photo=cfg.eval_crops, seed=cfg.seed)
    return {**result, "load_s": round(load_s, 2)}


def build_default(cfg: BuildConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage (skipping finished ones); returns the evaluation, also written to report.json."""
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(work / "build_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    timings = {}
    t = time.perf_counter()
    stage_images(cfg, work, progress)
    timings["images_s"] = time.perf_counter() - t
    t = time.perf_counter()
    stage_label(cfg, work, progress)
    stage_cache(cfg, work, progress)
    timings["label_cache_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = stage_train(cfg, work, progress)
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = stage_refine(cfg, work, trained, progress)
    timings["refine_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = stage_align(cfg, work, trained)
    timings["align_s"] = time.perf_counter() - t
    out = stage_export(cfg, trained)
    report = {**stage_eval(cfg, out), **{k: round(v, 1) for k, v in timings.items()}, "out": str(out)}
    atomic_write_bytes(work / "report.json", json.dumps(report, indent=2).encode())
    return report
