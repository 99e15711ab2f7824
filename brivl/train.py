"""Cross-modal MoCo pre-training on DeepSpeed: resumable to the exact step, one or many processes."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import yaml

from .checkpoint import CheckpointError, atomic_write_bytes, load_into, load_safetensors, save_safetensors
from .config import BriVLConfig, ConfigError, preset
from .data import Augment, PairDataset, ResumableSampler, batches, read_pairs
from .errors import NonFiniteLoss  # noqa: F401 - re-exported: the names callers know
from .feature_cache import FeatureCacheDataset, cache_batches, is_feature_cache
from .hub import load
from .lite.assemble import with_package_backbones
from .moco import CrossModalMoCo, check_queue_size
from .progress import bar as progress_bar
from .model.brivl import BriVL
from .nested_state import load_nested, rng_state, save_nested, set_rng_state
from .run_lock import OutputBusyError, acquire, release
from .train_kinds import check_train_kinds

log = logging.getLogger("brivl.train")
LATEST = "latest"


@dataclass
class FreezeConfig:
    """Which backbone parts train (the paper's fine-tuning factors); None means all of it."""

    cnn_blocks: list[int] | None = None  # trainable CNN stages, e.g. [3, 4, 5, 6] as in the release
    text_layers: int | None = None  # number of last backbone layers that train, e.g. 4 as in the release
    fix_bn: bool = False  # keep the CNN's batch-norm statistics and affine parameters fixed


class LossTerm(Protocol):
    """An extra loss term that a caller adds to the contrastive loss (e.g. recipes.brivl_lite.distill.Distill).

    Training knows nothing of the terms: `Trainer(cfg, extra_losses=[...])` asks each one to check the run once,
    to prepare its inputs for every batch, and to compute its value inside the model's forward pass. The total
    loss gains weight x value, and the metrics a `loss_<name>` entry.
    """

    name: str
    weight: float

    def setup(self, trainer: Trainer) -> None:
        """Check the run (its data, its model) before the first step; raise ConfigError if it cannot work."""

    def batch_inputs(self, trainer: Trainer, batch: Any, dtype: torch.dtype) -> dict[str, Any]:
        """This step's inputs, on the trainer's device (draw randomness from torch's RNG: checkpoints restore it)."""

    def loss(self, moco: CrossModalMoCo, z_img: torch.Tensor, z_txt: torch.Tensor,
             inputs: dict[str, Any]) -> torch.Tensor:
        """The unweighted term, a scalar, from this batch's query embeddings and batch_inputs' result."""


@dataclass
class TrainConfig:
    """Everything a pre-training run needs; read from YAML by `brivl train --config`."""

    data: str
    output: str = "runs/brivl"
    model: str = "tiny"  # a preset, or a model folder to start from
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {image: {att_layers: 0}}
    loss: str = "moco"  # or "inbatch" (SimCLR/CLIP-style, the paper's ablation)
    steps: int = 100
    batch_size: int = 8  # per process
    queue_size: int | None = None  # default: the model config's
    momentum: float | None = None
    temperature: float | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float = 0.0  # gradient-norm clipping; 0 is off (the paper does not mention any)
    schedule: str = "constant"  # or "cosine" (after warm-up)
    zero_stage: int = 0
    precision: str = "fp32"  # or "bf16"
    seed: int = 0
    augment: bool = True
    save_every: int = 100
    keep_checkpoints: int = 2
    data_threads: int = 2
    freeze: FreezeConfig = field(default_factory=FreezeConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping, refusing unknown keys by name."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a training config is a mapping of options (data:, steps:, ...), "
                              f"got a YAML {type(data).__name__}")
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        freeze = data.pop("freeze", None) or {}
        bad = sorted(set(freeze) - {f.name for f in dataclasses.fields(FreezeConfig)})
        if bad:
            raise ConfigError(f"unknown freeze option(s): {', '.join(bad)}")
        if "data" not in data:
            raise ConfigError("the training config needs `data:` (a manifest or a folder of image + text files)")
        cfg = cls(**data, freeze=FreezeConfig(**freeze))
        check_train_kinds(cfg)
        if cfg.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {cfg.precision!r}")
        if cfg.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_stage must be 0-3, got {cfg.zero_stage}")
        if cfg.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be constant or cosine, got {cfg.schedule!r}")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML training config."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}: cannot read training config ({first})") from None
        return cls.from_dict(data)

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) step: linear warm-up, then constant or cosine to zero."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            span = max(1, self.steps - self.warmup_steps)
            return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))
        return self.lr


# --- process group -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_processes() -> tuple[int, int, torch.device]:
    """Join (or, alone, create) the process group: gloo on CPU, NCCL on GPUs. Returns rank, world, device."""
    import deepspeed  # deferred: a heavy optional dependency
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)  # its INFO lines would drown the progress bar
    if "RANK" not in os.environ:  # a plain `python`/`brivl train`: a group of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


# --- model ---------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig):
    """The model to train: a preset (random init, seeded) or a saved model, with config overrides."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "tiny" and not cfg.model_overrides:
        return load("tiny")
    if Path(cfg.model).is_dir():
        model = load(cfg.model)
        if cfg.model_overrides:
            raise ConfigError("model_overrides apply to presets only, not to a saved model")
        return model
    mc = preset(cfg.model).to_dict()
    for section, values in cfg.model_overrides.items():
        if isinstance(values, dict):
            mc[section].update(values)
        else:
            mc[section] = values
    model = BriVL(BriVLConfig.from_dict(mc))
    if model.config.image.backbone_weights or model.config.text.backbone_weights:
        with_package_backbones(model)  # pre-trained backbones from installed packages, new heads
    return model


def apply_freeze(model, freeze: FreezeConfig) -> None:
    """Stop gradients to the backbone parts the config keeps fixed."""
    cnn = model.imgencoder.backbone
    if freeze.cnn_blocks is not None:
        cnn.requires_grad_(False)
        blocks = getattr(cnn, "blocks", None)
        if blocks is None:
            raise ConfigError(f"freeze.cnn_blocks needs a CNN with `blocks`; {type(cnn).__name__} has none")
        for i in freeze.cnn_blocks:
            if not 0 <= i < len(blocks):
                raise ConfigError(f"freeze.cnn_blocks: block {i} does not exist (the CNN has {len(blocks)})")
            blocks[i].requires_grad_(True)
    if freeze.fix_bn:
        for m in cnn.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(False)
    if freeze.text_layers is not None:
        bert = model.textencoder.backbone.bert
        bert.requires_grad_(False)
        layers = bert.encoder.layer
        for layer in layers[len(layers) - freeze.text_layers:] if freeze.text_layers else []:
            layer.requires_grad_(True)


def _bn_eval(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


# --- checkpoints ---------------------------------------------------------------------------------
def _gathered(engine, params):
    import deepspeed  # deferred: a heavy optional dependency

    if getattr(engine, "zero_optimization_stage", lambda: 0)() == 3:
        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return _NullContext()


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def save_checkpoint(engine, moco: CrossModalMoCo, cfg: TrainConfig, step: int, sampler: ResumableSampler,
                    metrics: dict[str, Any], process_state: Callable[[], dict[str, Any]]) -> Path:
    """Write checkpoint `step` atomically: a temp folder, then a rename, then the `latest` pointer."""
    rank, world = dist.get_rank(), dist.get_world_size()
    root = Path(cfg.output) / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    with _gathered(engine, list(moco.parameters())):
        if rank == 0:
            moco.model.save_pretrained(tmp / "model")
            if moco.loss_kind == "moco":
                extra = {f"imgencoder_mom.{k}": v for k, v in moco.imgencoder_mom.state_dict().items()}
                extra.update({f"textencoder_mom.{k}": v for k, v in moco.textencoder_mom.state_dict().items()})
                extra.update(img_queue=moco.img_queue, text_queue=moco.text_queue,
                             queue_ptr=moco.queue_ptr, queue_fill=moco.queue_fill)
                save_safetensors(extra, tmp / "momentum.safetensors")
    save_nested(engine.optimizer.state_dict(), tmp / f"optim-rank{rank}")
    save_nested(process_state(), tmp / f"process-rank{rank}")
    dist.barrier()
    if rank == 0:
        state = {"step": step, "world_size": world, "sampler": dataclasses.asdict(sampler.state),
                 "config": dataclasses.asdict(cfg), "metrics": metrics}
        atomic_write_bytes(tmp / "state.json", json.dumps(state, indent=2).encode())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_bytes(root / LATEST, final.name.encode())
        kept = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in kept[:-max(1, cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def latest_checkpoint(output: str | Path) -> Path | None:
    """The checkpoint folder `latest` points to, or None if there is none yet."""
    root = Path(output) / "checkpoints"
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} points to {path.name}, which is incomplete or missing")
    return path


def load_checkpoint(path: Path, engine, moco: CrossModalMoCo, sampler: ResumableSampler,
                    process_state: Callable[[], dict[str, Any]],
                    restore_process_state: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Restore weights, momentum towers, queues, optimizer, sampler and RNG from a checkpoint folder."""
    rank, world = dist.get_rank(), dist.get_world_size()
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != world:
        raise CheckpointError(f"{path} was written by {state['world_size']} process(es); resume with the same number "
                              f"(now {world})")
    weights = load_safetensors(path / "model" / "model.safetensors")
    with _gathered(engine, list(moco.parameters())):
        if rank == 0 or engine.zero_optimization_stage() != 3:
            load_into(moco.model, weights, str(path / "model"))
            if moco.loss_kind == "moco":
                extra = load_safetensors(path / "momentum.safetensors")
                for name, tower in (("imgencoder_mom", moco.imgencoder_mom), ("textencoder_mom", moco.textencoder_mom)):
                    load_into(tower, {k.split(".", 1)[1]: v for k, v in extra.items() if k.startswith(name + ".")},
                              str(path / "momentum.safetensors"))
                for buf in ("img_queue", "text_queue", "queue_ptr", "queue_fill"):
                    getattr(moco, buf).copy_(extra[buf])
    saved = load_nested(path / f"optim-rank{rank}", engine.optimizer.state_dict())
    if engine.zero_optimization_stage() > 0:
        # ZeRO optimizers take one state per saved rank; with an unchanged world only this rank's is read,
        # and the fp32 master partition is restored exactly rather than rebuilt from the model weights.
        engine.optimizer.load_state_dict([saved if r == rank else None for r in range(world)],
                                         load_from_fp32_weights=True)
    else:
        engine.optimizer.load_state_dict(saved)
    restore_process_state(load_nested(path / f"process-rank{rank}", process_state()))
    sampler.state.epoch, sampler.state.batch = state["sampler"]["epoch"], state["sampler"]["batch"]
    return state


# --- the loop ------------------------------------------------------------------------------------
def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed config of a run: Adam with L2 weight decay (the paper's), ZeRO stage, precision."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,  # MoCo enqueues per forward: accumulation would mix queue states
        "optimizer": {"type": "Adam", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                 "torch_adam": True, "adam_w_mode": False}},
        "zero_optimization": {"stage": cfg.zero_stage},
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }
    if cfg.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    return ds


@torch.no_grad()
def average_bn_statistics(module: torch.nn.Module) -> None:
    """Average batch-norm running statistics over processes, so every rank holds the same model."""
    buffers = [b for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))]
    if not buffers:
        return
    flat = torch.cat([b.flatten().float() for b in buffers])
    dist.all_reduce(flat)  # gloo has no AVG: sum, then divide
    flat /= dist.get_world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


class Trainer:
    """One pre-training run: process group, model, MoCo module, DeepSpeed engine, data and checkpoints."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, extra_losses: Sequence[LossTerm] = ()):
        self.cfg = cfg
        self.extra_losses = list(extra_losses)  # terms added to the contrastive loss (LossTerm)
        self.rank, self.world, self.device = init_processes()
        self._lock_output()
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.close()  # a run that never started must not keep the folder locked
            raise

    def _setup(self, cfg: TrainConfig, resume: bool) -> None:
        """Model, MoCo module, DeepSpeed engine, data, sampler, and the checkpoint to resume from."""
        import deepspeed  # deferred: a heavy optional dependency

        self.global_batch = cfg.batch_size * self.world
        self.model = build_model(cfg)
        queue_size = cfg.queue_size or self.model.config.queue_size
        if cfg.loss == "moco":
            check_queue_size(queue_size, self.global_batch)
        apply_freeze(self.model, cfg.freeze)
        self.moco = CrossModalMoCo(self.model, loss=cfg.loss, queue_size=queue_size, momentum=cfg.momentum,
                                   temperature=cfg.temperature)
        # The saved model's config records the MoCo settings it was trained with.
        mc = self.model.config
        mc.queue_size, mc.momentum, mc.temperature = self.moco.queue_size, self.moco.momentum, self.moco.temperature
        trainable = [p for p in self.moco.parameters() if p.requires_grad]
        self.engine, _, _, _ = deepspeed.initialize(model=self.moco, model_parameters=trainable,
                                                    config=deepspeed_config(cfg))
        if is_feature_cache(cfg.data):  # frozen backbones, cached outputs: only the heads run
            self.dataset = FeatureCacheDataset(cfg.data, self.model)
        else:
            self.dataset = PairDataset(read_pairs(cfg.data), self.model.image_size,
                                       Augment() if cfg.augment else None, seed=cfg.seed)
        for term in self.extra_losses:
            term.setup(self)
        self.sampler = ResumableSampler(len(self.dataset), self.global_batch, self.rank, self.world, seed=cfg.seed)
        self.out = Path(cfg.output)
        self.step = 0
        self.truncated = 0
        checkpoint = latest_checkpoint(self.out)
        if checkpoint is not None and not resume:
            raise ConfigError(f"{self.out} already holds checkpoints (latest {checkpoint.name}): pass --resume to "
                              f"continue that run, or choose a new output folder")
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, self.engine, self.moco, self.sampler, self.process_state,
                                    self.restore_process_state)
            self.step = state["step"]
            if self.rank == 0:
                log.info("resumed from %s at step %d", checkpoint, self.step)
        else:
            torch.manual_seed(cfg.seed + self.rank)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2).encode())
            self._trim_metrics()

    def _lock_output(self) -> None:
        """Rank 0 takes the output folder's lock; every rank stops if another training holds it."""
        busy: OutputBusyError | None = None
        if self.rank == 0:
            try:
                acquire(self.cfg.output)
            except OutputBusyError as e:
                busy = e
        if self.world > 1:  # the other ranks would otherwise wait for rank 0 at the first barrier
            flag = torch.tensor([0 if busy is None else 1])
            dist.broadcast(flag, 0)
            if flag.item() and busy is None:
                busy = OutputBusyError(f"{self.cfg.output} is in use by another training (see rank 0)")
        if busy is not None:
            raise busy

    def close(self) -> None:
        """Release the output folder for the next training."""
        if self.rank == 0:
            release(self.cfg.output)

    def _trim_metrics(self) -> None:
        # Steps logged after the checkpoint we resumed from will be run again: drop their old rows.
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", 0) <= self.step]
        if len(keep) != len(rows):
            atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())

    def process_state(self) -> dict[str, Any]:
        """What each process must keep for an exact resume: its RNG and its data-skipping record."""
        return {"rng": rng_state(), "bad": sorted(self.dataset.bad), "skipped": dict(self.dataset.skipped),
                "truncated": self.truncated}

    def restore_process_state(self, state: dict[str, Any]) -> None:
        """Restore what process_state returned."""
        set_rng_state(state["rng"])
        self.dataset.bad = set(state["bad"])
        self.dataset.skipped.clear()
        self.dataset.skipped.update(state["skipped"])
        self.truncated = int(state["truncated"])

    def _inputs(self, batch) -> dict[str, torch.Tensor | None]:
        """Model inputs on the device from a (pixels, texts) batch or a cached-features batch."""
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float32
        if isinstance(batch, dict):
            inputs = {"pixels": None, "input_ids": None,
                      "attention_mask": batch["attention_mask"].to(self.device),
                      "box_means": batch["box_means"].to(self.device, dtype),
                      "hidden": batch["hidden"].to(self.device, dtype)}
            return self._with_extra(inputs, batch, dtype)
        pixels, texts = batch
        tokens = self.model.tokenize(texts, warn=False)
        self.truncated += int(tokens.pop("truncated"))
        inputs = {"pixels": pixels.to(self.device, dtype), "input_ids": tokens["input_ids"].to(self.device),
                  "attention_mask": tokens["attention_mask"].to(self.device)}
        return self._with_extra(inputs, batch, dtype)

    def _with_extra(self, inputs: dict[str, Any], batch: Any, dtype: torch.dtype) -> dict[str, Any]:
        """inputs plus each extra loss term with its inputs for this batch (none: inputs unchanged)."""
        if self.extra_losses:
            inputs["extra"] = [(term, term.batch_inputs(self, batch, dtype)) for term in self.extra_losses]
        return inputs

    def train_step(self, batch) -> dict[str, Any]:
        """One optimisation step on one batch ((pixels, texts) or cached features); returns its metrics."""
        cfg, moco = self.cfg, self.moco
        t0 = time.perf_counter()
        inputs = self._inputs(batch)
        lr = cfg.lr_at(self.step)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        self.engine.train()
        if cfg.freeze.fix_bn:
            _bn_eval(moco.imgencoder.backbone)
            if cfg.loss == "moco":
                _bn_eval(moco.imgencoder_mom.backbone)
        result = self.engine(**inputs)
        loss = result["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(f"step {self.step + 1}: the loss is {loss.item()}; stopped without saving this "
                                f"step (lower the learning rate or use fp32)")
        self.engine.backward(loss)
        self.engine.step()
        if self.world > 1:
            average_bn_statistics(moco)
        self.step += 1
        names = ["loss", "loss_i2t", "loss_t2i"] + [f"loss_{term.name}" for term in self.extra_losses]
        logged = torch.stack([result[k].detach().float().to(loss.device) for k in names])
        if self.world > 1:  # log the mean over processes, not rank 0's share
            dist.all_reduce(logged)
            logged /= self.world
        return {"step": self.step, **{k: logged[i].item() for i, k in enumerate(names[:3])}, "lr": lr,
                **{k: logged[i].item() for i, k in enumerate(names) if i >= 3},
                "samples_per_s": self.global_batch / (time.perf_counter() - t0),
                "queue_fill": int(moco.queue_fill) if cfg.loss == "moco" else None,
                "skipped": dict(self.dataset.skipped), "truncated_texts": self.truncated}

    def run(self, progress: bool | None = None, callback: Callable[[dict[str, Any]], None] | None = None
            ) -> dict[str, Any]:
        """Train to cfg.steps from wherever the run is; returns the last step's metrics."""
        cfg = self.cfg
        bar = progress_bar(total=cfg.steps, initial=self.step, progress=progress if self.rank == 0 else False,
                           desc="pre-training", unit="step")
        if isinstance(self.dataset, FeatureCacheDataset):
            stream = cache_batches(self.dataset, self.sampler)
        else:
            stream = batches(self.dataset, self.sampler, threads=cfg.data_threads)
        last: dict[str, Any] = {}
        try:
            while self.step < cfg.steps:
                last = self.train_step(next(stream))
                if self.rank == 0:
                    with open(self.out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(last) + "\n")
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
                if callback is not None:
                    callback(last)
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    save_checkpoint(self.engine, self.moco, cfg, self.step, self.sampler, last, self.process_state)
        finally:
            bar.close()
            self.close()  # finished or failed, the folder is free for the next run (or its --resume)
        return last


def train(cfg: TrainConfig, resume: bool = False, progress: bool | None = None,
          callback: Callable[[dict[str, Any]], None] | None = None,
          extra_losses: Sequence[LossTerm] = ()) -> dict[str, Any]:
    """Run (or resume) pre-training, adding `extra_losses` (LossTerm) to the loss; returns the last step's metrics."""
    return Trainer(cfg, resume=resume, extra_losses=extra_losses).run(progress=progress, callback=callback)
