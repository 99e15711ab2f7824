"""The one door to transformers' loaders: local files only, and never code that a model folder ships."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging as hf_logging

from .errors import ConfigError, RemoteCodeError

# Files in which transformers looks for `auto_map`, the key that names Python code to import from the folder.
_CONFIG_FILES = ("tokenizer_config.json", "config.json", "processor_config.json", "preprocessor_config.json")
# Backbone config keys that would make transformers import a class from a path or a repository.
_CODE_KEYS = ("auto_map", "_name_or_path", "name_or_path", "custom_pipelines")


def refuse_remote_code(path: str | Path | None) -> None:
    """Raise RemoteCodeError if a folder (or a file's folder) names custom code in an `auto_map`."""
    if not path:
        return
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    for name in _CONFIG_FILES:
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not ours to judge here: the loader that reads it reports a damaged file
        if isinstance(data, dict) and data.get("auto_map"):
            raise RemoteCodeError(
                f"{file}: refused: its 'auto_map' asks to run Python code shipped with the model "
                f"({_first_class(data['auto_map'])}); brivl never runs code from a model folder. "
                f"Remove 'auto_map' (and the .py files) if the tokenizer is a standard one")


def _first_class(auto_map: Any) -> str:
    """One class reference from an auto_map, for the message."""
    if isinstance(auto_map, dict):
        for value in auto_map.values():
            refs = value if isinstance(value, (list, tuple)) else [value]
            for ref in refs:
                if isinstance(ref, str):
                    return ref[:80]
    return "custom code"


def hf_tokenizer(path: str | Path):
    """A transformers tokenizer from local files, after refusing any folder that names its own code."""
    refuse_remote_code(path)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def hf_config(path: str | Path):
    """A transformers config from a local folder, after refusing any folder that names its own code."""
    refuse_remote_code(path)
    return AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def hf_image_processor(path: str | Path):
    """A transformers image processor from a local folder's preprocessor_config.json (built-in classes only)."""
    refuse_remote_code(path)
    return AutoImageProcessor.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def hf_pretrained(cls: type, path: str | Path) -> nn.Module:
    """A built-in transformers model class's weights from a local folder, in float32; no code from the folder."""
    refuse_remote_code(path)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor loading bar would bury brivl's own one-line output
    try:
        return cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def text_backbone(fields: dict[str, Any], pooler: bool = True) -> nn.Module:
    """A randomly initialised transformers model from config fields: built-in classes only, no code imported."""
    fields = dict(fields)
    model_type = fields.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"text.backbone.model_type {model_type!r} is not a transformers model type")
    code = [k for k in _CODE_KEYS if k in fields]
    if code:  # these would point transformers at code outside the installed packages
        raise ConfigError(f"text.backbone: field(s) {', '.join(code)} are not allowed (they name code to import)")
    hf_config = AutoConfig.for_model(model_type, **fields)
    return AutoModel.from_config(hf_config, add_pooling_layer=pooler, trust_remote_code=False)
