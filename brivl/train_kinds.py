"""Kinds of training options: `steps: ten` or `lr: fast` become one-line ConfigErrors, not tracebacks mid-run."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .train import TrainConfig

# name: lowest allowed value (integers)
INTS = {"steps": 1, "batch_size": 1, "warmup_steps": 0, "seed": 0, "save_every": 1, "keep_checkpoints": 1,
        "data_threads": 1, "zero_stage": 0}
OPTIONAL_INTS = {"queue_size": 1}
# name: (lowest, lowest excluded?) for real numbers
FLOATS = {"lr": (0.0, True), "weight_decay": (0.0, False), "grad_clip": (0.0, False)}
OPTIONAL_FLOATS = {"momentum": (0.0, False), "temperature": (0.0, True)}
CHOICES = {"loss": ("moco", "inbatch")}


def int_option(field: str, value: Any, lo: int) -> int:
    """value if it is an integer >= lo, else a ConfigError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{field} must be an integer >= {lo}, got {value!r}")
    return value


def float_option(field: str, value: Any, lo: float, open_lo: bool) -> float:
    """value as a finite float >= lo (> lo if open_lo); numeric strings count. Else a ConfigError."""
    # YAML reads 1e-4 (no dot) as a string: numeric strings are numbers here, anything else is refused.
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number) or number < lo or (open_lo and number == lo):
        raise ConfigError(f"{field} must be a number {'>' if open_lo else '>='} {lo:g}, got {value!r}")
    return number


def check_train_kinds(cfg: TrainConfig) -> None:
    """Check (and normalise numeric strings of) every option's kind; raise ConfigError naming the first bad one."""
    for name, lo in INTS.items():
        int_option(name, getattr(cfg, name), lo)
    for name, lo in OPTIONAL_INTS.items():
        if getattr(cfg, name) is not None:
            int_option(name, getattr(cfg, name), lo)
    for name, (lo, open_lo) in FLOATS.items():
        setattr(cfg, name, float_option(name, getattr(cfg, name), lo, open_lo))
    for name, (lo, open_lo) in OPTIONAL_FLOATS.items():
        if getattr(cfg, name) is not None:
            setattr(cfg, name, float_option(name, getattr(cfg, name), lo, open_lo))
    for name in ("data", "output", "model"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            raise ConfigError(f"{name} must be a non-empty string, got {getattr(cfg, name)!r}")
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
    if not isinstance(cfg.augment, bool):
        raise ConfigError(f"augment must be true or false, got {cfg.augment!r}")
    if not isinstance(cfg.model_overrides, dict):
        raise ConfigError(f"model_overrides must be a mapping (e.g. {{image: {{att_layers: 2}}}}), "
                          f"got {cfg.model_overrides!r}")
    fr = cfg.freeze
    blocks = fr.cnn_blocks
    if blocks is not None and not (isinstance(blocks, list)
                                   and all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)):
        raise ConfigError(f"freeze.cnn_blocks must be a list of block numbers, got {fr.cnn_blocks!r}")
    if fr.text_layers is not None:
        int_option("freeze.text_layers", fr.text_layers, 0)
    if not isinstance(fr.fix_bn, bool):
        raise ConfigError(f"freeze.fix_bn must be true or false, got {fr.fix_bn!r}")
