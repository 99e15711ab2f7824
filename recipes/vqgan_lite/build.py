"""`brivl build-vqgan`: train the embedded VQGAN ("vqgan-lite") on images made offline, then measure it.

The training images are the brivl-lite recipe's own (DeepInversion class images, mosaics of them, procedural
images: `recipes.brivl_lite.recipe.stage_images`, made when the folder is empty); `image_kinds` picks among them. The
real photos that packages ship (`recipes.brivl_lite.heldout`) are never trained on: the reconstruction PSNR is measured
on them.

Losses: L1 + MSE on pixels, a perceptual term on the packaged EfficientNet-Lite0's early feature maps, and the
VQ commitment term; the codebook follows an exponential moving average of its assigned encoder outputs, and
codes unused for a while restart at random encoder outputs (a small codebook trained briefly otherwise loses
most codes). The run is resumable: safetensors checkpoints (model, EMA codebook state, Adam moments, RNG state)
written atomically every `save_every` steps and when `max_minutes` runs out.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn
from brivl.progress import bar as progress_bar

from brivl.checkpoint import atomic_write_bytes, load_safetensors, save_safetensors
from brivl.config import ConfigError
from brivl.errors import DivergedError
from brivl.lite.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, load_efficientnet_lite
from brivl.viz.vqgan import (
    LITE_FOLDER,
    VQGAN,
    ResnetBlock,
    VQGANConfig,
    load_vqgan_folder,
    psnr,
    save_vqgan,
)

from ..brivl_lite.heldout import heldout_photos, square_view
from ..brivl_lite.recipe import BuildConfig, stage_images

log = logging.getLogger("brivl.build_vqgan")
CKPT_NAME = "train_state.safetensors"
META_NAME = "train_state.json"


@dataclass
class VQGANBuildConfig:
    """What `brivl build-vqgan` trains and for how long (configs/build-vqgan.yaml)."""

    images: str = "build/brivl-lite"  # a brivl-lite work folder: its images/ are trained on (made when absent)
    make_images: dict[str, Any] = field(default_factory=dict)  # BuildConfig overrides for making them
    image_kinds: list[str] = field(default_factory=list)  # file-name prefixes to train on (synth, mosaic, proc); [] = all
    work: str = "build/vqgan-lite"  # checkpoints, metrics.jsonl, report.json
    out: str = ""  # "" = the package's brivl/assets/vqgan-lite
    model: dict[str, Any] = field(default_factory=lambda: {
        "ch": 32, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 1, "attn_resolutions": [], "resolution": 256,
        "z_channels": 64, "embed_dim": 16, "n_embed": 512, "norm_groups": 8})
    steps: int = 500
    batch_size: int = 16
    crop: int = 64  # training crops (px); convolutions make the model work at any multiple of its factor
    min_crop_scale: float = 0.35  # random crops cover this share of the shorter side or more, resized to `crop`
    lr: float = 2e-3
    warmup_steps: int = 100
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    chroma_weight: float = 0.0  # extra L1 + MSE on the two chroma axes (see chroma)
    perceptual_weight: float = 0.05  # 0 = no EfficientNet-Lite0 perceptual term
    beta: float = 0.25  # commitment weight
    ae_warmup_steps: int = 0  # first steps as a plain autoencoder (no quantisation); then codes start at latents
    ema_decay: float = 0.95
    dead_after: float = 0.03  # a code whose EMA usage count drops below this restarts at a random encoder output
    save_every: int = 250
    log_every: int = 25
    max_minutes: float = 0.0  # stop (checkpointed, resumable) after this much wall time; 0 = no limit
    eval_size: int = 256  # held-out photos are evaluated as centred squares of this side
    dtype: str = "float16"  # the exported weights
    seed: int = 0

    @classmethod
    def load(cls, path: str | Path) -> VQGANBuildConfig:
        """Read a YAML build config, refusing unknown keys by name."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{path}: unknown build-vqgan option(s): {', '.join(unknown)}")
        return cls(**data)


# --- data -----------------------------------------------------------------------------------------------------

def training_images(cfg: VQGANBuildConfig, progress: bool = True) -> list[Tensor]:
    """The recipe's offline images as uint8 [3, H, W] tensors (made with the brivl-lite recipe when absent)."""
    work = Path(cfg.images)
    files = sorted((work / "images").glob("*.png"))
    if not files:
        log.info("no images under %s: making them with the brivl-lite recipe", work / "images")
        stage_images(BuildConfig(work=str(work), **cfg.make_images), work, progress)
        files = sorted((work / "images").glob("*.png"))
    files = [f for f in files if not f.name.endswith(".tmp.png")]
    if not files:
        raise ConfigError(f"{work / 'images'}: no training images (and the recipe made none)")
    if cfg.image_kinds:
        kinds = tuple(f"{k}-" for k in cfg.image_kinds)
        files = [f for f in files if f.name.startswith(kinds)]
        if not files:
            raise ConfigError(f"{work / 'images'}: no images of the kinds {cfg.image_kinds} (image_kinds); the "
                              f"recipe names them synth-*, mosaic-*, proc-*")
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
    return out


def sample_batch(images: list[Tensor], n: int, crop: int, min_scale: float, g: torch.Generator) -> Tensor:
    """n random square crops (random scale, random flip) resized to crop x crop, floats in [0, 1]."""
    picks = torch.randint(0, len(images), (n,), generator=g).tolist()
    out = []
    for i in picks:
        img = images[i]
        h, w = img.shape[-2:]
        short = min(h, w)
        side = max(min(crop, short), int(short * (min_scale + (1 - min_scale) * float(torch.rand((), generator=g)))))
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        x = img[:, top:top + side, left:left + side].float().div(255)[None]
        if side != crop:
            x = F.interpolate(x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
        if float(torch.rand((), generator=g)) < 0.5:
            x = x.flip(-1)
        out.append(x)
    return torch.cat(out).clamp(0, 1)


# --- losses ---------------------------------------------------------------------------------------------------

class Perceptual(nn.Module):
    """Distance between early EfficientNet-Lite0 feature maps (the packaged ImageNet weights, frozen)."""

    def __init__(self, stages: int = 3):
        super().__init__()

        net = load_efficientnet_lite(0)
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.blocks = nn.ModuleList(net.blocks[:stages])
        self.register_buffer("mean", torch.tensor(EFFICIENTNET_LITE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(EFFICIENTNET_LITE_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised (per position) feature maps of images in [0, 1] after each block stage."""
        h = self.stem((x - self.mean) / self.std)
        out = []
        for block in self.blocks:
            h = block(h)
            out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-6))  # LPIPS-style channel normalisation
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean squared distance of the normalised features of a and b, summed over the stages."""
        with torch.no_grad():
            fb = self.features(b)
        return sum(F.mse_loss(x, y, reduction="sum") / x.shape[0] / (x.shape[-1] * x.shape[-2])
                   for x, y in zip(self.features(a), fb))


def chroma(x: Tensor) -> Tensor:
    """The two colour-difference axes (B - Y, R - Y) of RGB images [n, 3, h, w] (Y: BT.601 luma).

    Pixel losses on RGB are dominated by luminance, whose variance is several times the chroma's; gradient descent
    learns high-variance directions first, and the first CPU-hour of training gave grey-green reconstructions.
    Weighing the chroma error up evens the pace.
    """
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return torch.stack([x[:, 2] - y, x[:, 0] - y], 1)


class EMACodebook:
    """EMA k-means updates of a VQGAN's codebook, with restarts of dead codes at random encoder outputs."""

    def __init__(self, model: VQGAN, decay: float, dead_after: float):
        k = model.codebook.shape[0]
        self.model, self.decay, self.dead_after = model, decay, dead_after
        self.count = torch.ones(k)
        self.total = model.codebook.detach().clone()

    @torch.no_grad()
    def seed_from(self, z: Tensor, g: torch.Generator) -> None:
        """Start every code at a distinct random latent of z [n, d, h, w] (after the autoencoder warm-up)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        k = self.count.numel()
        pick = torch.randperm(flat.shape[0], generator=g)[:k]
        if len(pick) < k:  # fewer latents than codes: the rest repeat, with a little noise to tell them apart
            extra = torch.randint(0, flat.shape[0], (k - len(pick),), generator=g)
            pick = torch.cat([pick, extra])
        book = flat[pick] + 1e-3 * flat.std() * torch.randn(k, flat.shape[1], generator=g)
        self.model.codebook.copy_(book)
        self.total.copy_(book)
        self.count.fill_(1.0)

    @torch.no_grad()
    def update(self, z: Tensor, idx: Tensor, g: torch.Generator) -> int:
        """Move each code to the EMA mean of the encoder outputs assigned to it; returns how many codes restarted."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        onehot = F.one_hot(idx.flatten(), self.count.numel()).float()
        self.count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.total.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.count.sum()
        smoothed = (self.count + 1e-5) / (n + self.count.numel() * 1e-5) * n  # Laplace smoothing
        book = self.total / smoothed[:, None]
        dead = (self.count < self.dead_after).nonzero().flatten()
        if len(dead):
            pick = torch.randint(0, flat.shape[0], (len(dead),), generator=g)
            book[dead] = flat[pick]
            self.total[dead] = flat[pick]
            self.count[dead] = 1.0
        self.model.codebook.copy_(book)
        return len(dead)

    def state(self) -> dict[str, Tensor]:
        """Tensors to checkpoint."""
        return {"ema.count": self.count, "ema.total": self.total}

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore from state()."""
        self.count, self.total = state["ema.count"].clone(), state["ema.total"].clone()


def train_step(model: VQGAN, ema: EMACodebook, x: Tensor, cfg: VQGANBuildConfig, perceptual: Perceptual | None,
               g: torch.Generator, quantize: bool = True) -> tuple[Tensor, dict[str, float]]:
    """The loss of one batch (backward not yet taken) and its parts; the codebook moves by EMA here.

    quantize=False trains a plain autoencoder (the warm-up: a from-scratch VQ bottleneck otherwise collapses the
    latents onto a few directions early, and the decoder never learns colour in a CPU-sized budget).
    """
    z = model.quant_conv(model.encoder(x * 2 - 1))
    if quantize:
        zq, idx = model.quantize_st(z)
        commit = F.mse_loss(z, model.codebook[idx].permute(0, 3, 1, 2).detach())  # pulls the encoder to its codes
    else:
        zq, idx, commit = z, None, torch.zeros(())
    recon = model.decode_raw(zq).add(1).div(2)
    l1, mse = (recon - x).abs().mean(), (recon - x).pow(2).mean()
    loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.beta * commit
    parts = {"l1": l1.item(), "mse": mse.item(), "commit": commit.item()}
    if cfg.chroma_weight:
        dc = chroma(recon) - chroma(x)
        c = dc.abs().mean() + dc.pow(2).mean()
        loss = loss + cfg.chroma_weight * c
        parts["chroma"] = c.item()
    if perceptual is not None and cfg.perceptual_weight:
        p = perceptual(recon, x)
        loss = loss + cfg.perceptual_weight * p
        parts["perceptual"] = p.item()
    if idx is None:
        parts.update(codes_used=0, restarted=0, psnr=10 * math.log10(1 / max(parts["mse"], 1e-10)))
        return loss, parts
    restarted = ema.update(z.detach(), idx, g)
    used = idx.unique().numel()
    parts.update(codes_used=used, restarted=restarted, psnr=10 * math.log10(1 / max(parts["mse"], 1e-10)))
    return loss, parts


# --- checkpoints ----------------------------------------------------------------------------------------------

def _save_state(folder: Path, step: int, model: VQGAN, ema: EMACodebook, opt: torch.optim.Adam,
                g: torch.Generator, elapsed: float) -> None:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update(ema.state())
    params = [p for group in opt.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        s = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in s:
                state[f"adam.{i}.{key}"] = s[key]
    state["rng"] = g.get_state()
    adam_steps = {i: float(opt.state[p]["step"]) for i, p in enumerate(params) if p in opt.state}
    save_safetensors(state, folder / CKPT_NAME)
    meta = {"step": step, "elapsed_s": round(elapsed, 1), "adam_steps": adam_steps}
    atomic_write_bytes(folder / META_NAME, json.dumps(meta).encode())  # written last: marks a complete pair


def _load_state(folder: Path, model: VQGAN, ema: EMACodebook, opt: torch.optim.Adam,
                g: torch.Generator) -> tuple[int, float]:
    meta = json.loads((folder / META_NAME).read_text())
    state = load_safetensors(folder / CKPT_NAME)
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")}, strict=True)
    ema.load(state)
    params = [p for group in opt.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        if f"adam.{i}.exp_avg" in state:
            opt.state[p] = {"step": torch.tensor(meta["adam_steps"][str(i)]),
                            "exp_avg": state[f"adam.{i}.exp_avg"].clone(),
                            "exp_avg_sq": state[f"adam.{i}.exp_avg_sq"].clone()}
    g.set_state(state["rng"])
    return int(meta["step"]), float(meta["elapsed_s"])


def _lr(cfg: VQGANBuildConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# --- evaluation -----------------------------------------------------------------------------------------------

@torch.no_grad()
def heldout_psnr(model: VQGAN, size: int = 256) -> dict[str, Any]:
    """Reconstruction PSNR (dB) on the held-out real photos (centred squares at size px), with a bicubic baseline.

    The baseline downsamples each photo by the model's factor and back up: what the latent grid's resolution
    alone keeps, without any codebook limit.
    """
    views = torch.cat([square_view(p, size) for p in heldout_photos().values()])
    recon = torch.cat([model.reconstruct(views[i:i + 4]) for i in range(0, len(views), 4)])
    f = model.factor
    small = F.interpolate(views, scale_factor=1 / f, mode="bicubic", antialias=True, align_corners=False)
    bicubic = F.interpolate(small, size=views.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    per = [psnr(recon[i], views[i]) for i in range(len(views))]
    return {"psnr_db": round(psnr(recon, views), 2), "psnr_mean_per_photo_db": round(sum(per) / len(per), 2),
            f"bicubic_x{f}_psnr_db": round(psnr(bicubic, views), 2), "photos": len(views), "size": size}


# --- the recipe -----------------------------------------------------------------------------------------------

# Settings a run may change when it resumes; any other change would continue one run under another's recipe.
_RESUME_FREE = {"steps", "max_minutes", "save_every", "log_every", "out", "work", "images", "make_images",
                "eval_size", "dtype"}


def _check_resumable(cfg: VQGANBuildConfig, work: Path) -> None:
    """Refuse to resume a checkpoint in `work` that was trained with other recipe settings."""
    saved = work / "build_config.json"
    if not (work / META_NAME).is_file() or not saved.is_file():
        return
    before, now = json.loads(saved.read_text()), dataclasses.asdict(cfg)
    changed = sorted(k for k in now if k not in _RESUME_FREE and before.get(k, now[k]) != now[k])
    if changed:
        raise ConfigError(f"{work} holds a checkpoint trained with other settings ({', '.join(changed)}: "
                          f"{', '.join(f'{before.get(k)!r} -> {now[k]!r}' for k in changed)}); "
                          f"set `work` to a new folder, or delete {work / META_NAME} to start over")


def _new_model(cfg: VQGANBuildConfig) -> VQGAN:
    """The seeded, untrained VQGAN of the build, in training mode."""
    torch.manual_seed(cfg.seed)  # the model's initial weights
    model = VQGAN(VQGANConfig(**cfg.model, name="vqgan-lite"))
    with torch.no_grad():
        model.codebook.normal_(0, 1)
        for m in model.modules():
            if isinstance(m, ResnetBlock):
                # Residual branches start at zero: each block starts as the identity, so the signal reaches the
                # output from step one (a deep default-initialised stack learned several times slower here).
                m.conv2.weight.zero_()
                m.conv2.bias.zero_()
    return model.train()


def build_vqgan(cfg: VQGANBuildConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the VQGAN, export it (fp16 safetensors + JSON), measure it on held-out photos."""
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    _check_resumable(cfg, work)
    atomic_write_bytes(work / "build_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
    model = _new_model(cfg)
    mcfg = model.config
    ema = EMACodebook(model, cfg.ema_decay, cfg.dead_after)
    model.codebook.requires_grad_(False)  # moved by EMA, not by Adam
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(cfg.seed)
    step, elapsed = 0, 0.0
    if (work / META_NAME).is_file():
        step, elapsed = _load_state(work, model, ema, opt, g)
        log.info("resumed at step %d (%.0f s trained so far)", step, elapsed)
    images = training_images(cfg, progress) if step < cfg.steps else []
    if images:
        log.info("%d training images; model %.2f M parameters, factor %d, %d codes", len(images),
                 sum(p.numel() for p in model.parameters()) / 1e6, model.factor, mcfg.n_embed)
    perceptual = Perceptual() if cfg.perceptual_weight and step < cfg.steps else None
    start, metrics = time.perf_counter() - elapsed, []
    with progress_bar(total=cfg.steps, initial=step, progress=progress, desc="vqgan-lite") as bar:
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, step)
            x = sample_batch(images, cfg.batch_size, cfg.crop, cfg.min_crop_scale, g)
            if step == cfg.ae_warmup_steps:
                # Codes start at the encoder's own outputs: codes drawn at random lie far from them, everything maps
                # to one or two codes and the rest wait ~70 steps to be restarted as dead.
                with torch.no_grad():
                    ema.seed_from(model.quant_conv(model.encoder(x * 2 - 1)), g)
                log.info("step %d: %d codes seeded from latents", step, mcfg.n_embed)
            loss, parts = train_step(model, ema, x, cfg, perceptual, g, quantize=step >= cfg.ae_warmup_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not math.isfinite(loss.item()):
                raise DivergedError(f"build-vqgan diverged at step {step}: loss {loss.item()}; lower lr")
            opt.step()
            step += 1
            bar.update(1)
            metrics.append(parts)
            if step % cfg.log_every == 0 or step == cfg.steps:
                mean = {k: round(sum(m[k] for m in metrics) / len(metrics), 5) for k in metrics[0]}
                mean.update(step=step, lr=round(_lr(cfg, step - 1), 6), elapsed_s=round(time.perf_counter() - start))
                with open(work / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(mean) + "\n")
                log.info("step %d: %s", step, mean)
                bar.set_postfix(psnr=f"{mean['psnr']:.2f}", codes=mean["codes_used"], refresh=False)
                metrics = []
            over = cfg.max_minutes and time.perf_counter() - start > cfg.max_minutes * 60
            if step % cfg.save_every == 0 or step == cfg.steps or over:
                _save_state(work, step, model, ema, opt, g, time.perf_counter() - start)
            if over and step < cfg.steps:
                log.info("max_minutes reached at step %d; checkpointed, run again to resume", step)
                break
    if cfg.ae_warmup_steps and step <= cfg.ae_warmup_steps and images:
        # Stopped (max_minutes) before quantisation began: seed the codes from latents so the export is a VQGAN.
        with torch.no_grad():
            x = sample_batch(images, max(cfg.batch_size, 16), cfg.crop, cfg.min_crop_scale, g)
            ema.seed_from(model.quant_conv(model.encoder(x * 2 - 1)), g)
        log.warning("stopped at step %d, inside the autoencoder warm-up: codes seeded from latents untrained", step)
    model.eval()
    out = Path(cfg.out) if cfg.out else LITE_FOLDER
    mcfg.extra = {"trained_steps": step, "train_seconds": round(time.perf_counter() - start),
                  "recipe": "brivl build-vqgan", "images": "brivl-lite recipe: " + (", ".join(cfg.image_kinds) or "synth, mosaic, proc")}
    save_vqgan(model, out, dtype=getattr(torch, cfg.dtype))
    exported = load_vqgan_folder(out)  # measure what ships (fp16 round trip), not the float32 training copy
    report = {"steps": step, "complete": step >= cfg.steps, "train_s": round(time.perf_counter() - start),
              "heldout": heldout_psnr(exported, cfg.eval_size), "out": str(out),
              "bytes": (out / "vqgan.safetensors").stat().st_size,
              "parameters": sum(p.numel() for p in exported.parameters())}
    exported.config.extra = {**mcfg.extra, "heldout_psnr_db": report["heldout"]["psnr_db"],
                             "heldout_photos": report["heldout"]["photos"], "eval_size": cfg.eval_size}
    atomic_write_bytes(out / "vqgan.json", (json.dumps(exported.config.to_dict(), indent=2) + "\n").encode())
    atomic_write_bytes(work / "report.json", json.dumps(report, indent=2).encode())
    return report
