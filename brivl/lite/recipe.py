"""`brivl build-default`: rebuild the brivl-lite heads from installed packages only (data-free distillation).

Stages, each resumable and written under the work folder:
1. images  - synthetic class images (DeepInversion on the EfficientNet-Lite0 classifier) and procedural images;
2. label   - captions from the classifier's top-1 ImageNet class name, through varied templates;
3. cache   - frozen-backbone outputs of a few augmented views per image (brivl.feature_cache);
4. train   - cross-modal MoCo on the heads only (brivl.train, DeepSpeed);
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

from ..checkpoint import atomic_write_bytes
from ..config import ConfigError

log = logging.getLogger("brivl.build")
CAPTION_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a close-up photo of a {}.", "an image of a {}.",
                     "a {} in the picture.", "{}", "a blurry photo of a {}.", "a bright photo of a {}.",
                     "a drawing of a {}.", "a photo of the {}, seen up close.")


@dataclass
class BuildConfig:
    """What `brivl build-default` makes and how long it trains (configs/build-lite.yaml)."""

    work: str = "build/brivl-lite"  # images, manifest, cache, training run
    out: str = ""  # where the heads go; "" = the installed package's brivl-lite folder
    synth_per_class: int = 2  # DeepInversion images per ImageNet class (0 = none)
    synth_classes: int = 1000  # the first N classes of a seeded permutation of the 1000
    synth_size: int = 160
    synth_steps: int = 200
    synth_batch: int = 16
    procedural: int = 2000  # procedural images (gradients, textures, shapes)
    procedural_size: int = 160
    views: int = 4  # augmented views cached per image
    steps: int = 3000
    batch_size: int = 64
    queue_size: int = 4096
    lr: float = 3e-4
    warmup_steps: int = 100
    temperature: float = 0.07
    seed: int = 0
    eval_crops: int = 8  # random crops per held-out photo, besides the whole photo

    @classmethod
    def load(cls, path: str | Path) -> "BuildConfig":
        """Read a YAML build config, refusing unknown keys by name."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown build option(s): {', '.join(unknown)}")
        return cls(**data)


def _done(path: Path) -> bool:
    return path.is_file()


def stage_images(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Write synthetic and procedural images as PNGs (batches already on disk are skipped)."""
    from tqdm.auto import tqdm

    from .efficientnet_lite import load_efficientnet_lite
    from .synthesis import procedural_images, synthesize

    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(cfg.seed))[:cfg.synth_classes].tolist()
    targets = [c for _ in range(cfg.synth_per_class) for c in order]
    teacher = load_efficientnet_lite(0)
    batches = [targets[i:i + cfg.synth_batch] for i in range(0, len(targets), cfg.synth_batch)]
    for b, classes in enumerate(tqdm(batches, disable=not progress, desc="synthesising class images")):
        last = folder / f"synth-{b:05d}-{len(classes) - 1:02d}.png"
        if _done(last):
            continue
        images = synthesize(teacher, classes, size=cfg.synth_size, steps=cfg.synth_steps, seed=cfg.seed + b)
        for j, img in enumerate(images):
            _save_png(img, folder / f"synth-{b:05d}-{j:02d}.png")
    chunk = 256
    for start in tqdm(range(0, cfg.procedural, chunk), disable=not progress, desc="procedural images"):
        n = min(chunk, cfg.procedural - start)
        if _done(folder / f"proc-{start + n - 1:06d}.png"):
            continue
        for j, img in enumerate(procedural_images(n, cfg.procedural_size, seed=cfg.seed * 7919 + start)):
            _save_png(img, folder / f"proc-{start + j:06d}.png")
    return folder


def _save_png(img: torch.Tensor, path: Path) -> None:
    array = (img.clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).numpy()
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(array).save(tmp)
    tmp.replace(path)


@torch.no_grad()
def stage_label(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Caption every image with the teacher's top-1 class name through a seeded template; write manifest.jsonl."""
    from tqdm.auto import tqdm

    from ..images import load_image
    from .efficientnet_lite import load_efficientnet_lite, preprocess_efficientnet_lite, short_class_names

    manifest = work / "manifest.jsonl"
    if _done(manifest):
        return manifest
    teacher, names = load_efficientnet_lite(0), short_class_names()
    files = sorted((work / "images").glob("*.png"))
    g = torch.Generator().manual_seed(cfg.seed)
    rows, confidences = [], []
    for start in tqdm(range(0, len(files), 64), disable=not progress, desc="labelling"):
        chunk = files[start:start + 64]
        pixels = torch.cat([preprocess_efficientnet_lite(load_image(f)[None], crop_pct=1.0) for f in chunk])
        probs = teacher(pixels).softmax(-1)
        conf, top = probs.max(-1)
        for f, c, k in zip(chunk, conf.tolist(), top.tolist()):
            template = CAPTION_TEMPLATES[int(torch.randint(len(CAPTION_TEMPLATES), (), generator=g))]
            rows.append({"image": f"images/{f.name}", "text": template.format(names[k]), "class": k,
                         "confidence": round(c, 4)})
            confidences.append(c)
    atomic_write_bytes(manifest, "".join(json.dumps(r) + "\n" for r in rows).encode())
    classes = {r["class"] for r in rows}
    log.info("labelled %d images: %d distinct teacher classes, mean confidence %.3f", len(rows), len(classes),
             sum(confidences) / max(1, len(confidences)))
    return manifest


def stage_cache(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """Frozen-backbone outputs for `views` augmented views of each image."""
    from ..config import preset
    from ..feature_cache import build_feature_cache, is_feature_cache
    from ..model.brivl import BriVL
    from .assemble import with_package_backbones

    folder = work / "cache"
    if is_feature_cache(folder):
        return folder
    model = with_package_backbones(BriVL(preset("brivl-lite"))).eval()
    return build_feature_cache(model, work / "manifest.jsonl", folder, views=cfg.views, seed=cfg.seed,
                               progress=progress)


def stage_train(cfg: BuildConfig, work: Path, progress: bool = True) -> Path:
    """MoCo on the heads, backbones frozen, from the feature cache (resumes an interrupted run)."""
    from ..train import TrainConfig, Trainer, latest_checkpoint

    tc = TrainConfig.from_dict({
        "data": str(work / "cache"), "output": str(work / "run"), "model": "brivl-lite", "loss": "moco",
        "steps": cfg.steps, "batch_size": cfg.batch_size, "queue_size": cfg.queue_size, "lr": cfg.lr,
        "warmup_steps": cfg.warmup_steps, "temperature": cfg.temperature, "seed": cfg.seed,
        "save_every": max(1, min(500, cfg.steps)), "augment": False,
        "freeze": {"cnn_blocks": [], "text_layers": 0, "fix_bn": True}})
    resume = latest_checkpoint(tc.output) is not None
    Trainer(tc, resume=resume).run(progress=progress)
    return latest_checkpoint(tc.output) / "model"


def stage_export(cfg: BuildConfig, trained: Path) -> Path:
    """Write the heads (fp16) and config where `brivl.load("brivl-lite")` finds them."""
    from ..hub import LITE_FOLDER, load

    out = Path(cfg.out) if cfg.out else LITE_FOLDER
    load(trained).save_pretrained(out, backbones=False, dtype=torch.float16)
    return out


def stage_eval(cfg: BuildConfig, out: Path) -> dict[str, Any]:
    """Teacher agreement of the exported model on the held-out photos."""
    from ..hub import load
    from .heldout import teacher_agreement

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
    out = stage_export(cfg, trained)
    report = {**stage_eval(cfg, out), **{k: round(v, 1) for k, v in timings.items()}, "out": str(out)}
    atomic_write_bytes(work / "report.json", json.dumps(report, indent=2).encode())
    return report
