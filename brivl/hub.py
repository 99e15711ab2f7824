"""Resolve a model name (a preset, a folder, a weights file) to a loaded model; nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import torch

from .assets import asset_folder
from .backends.hf_clip import is_hf_folder, load_hf_clip
from .backends.openclip import load_openclip
from .checkpoint import WEIGHTS_NAME
from .config import CONFIG_NAME, PRESETS
from .config import preset as preset_config  # `preset` is also a parameter of load
from .errors import CheckpointError, ConfigError, ModelNotFoundError
from .hf import refuse_remote_code
from .model.brivl import BriVL
from .official import load_official
from .tokenizer import load_tokenizer

TINY_SEED = 0
LITE_FOLDER = asset_folder("brivl-lite")  # heads + config; backbones come from packages
# Presets whose weights exist only as the official release: the user converts them once.
_RELEASE_ONLY = {"brivl-1.0": "the BriVL 1.0 release checkpoint (BriVL-1.0-5500w.pth)",
                 "brivl-nmi": "the Nature Communications release checkpoint (BriVL w/ RoBERTa-base)",
                 "brivl-paper": "a checkpoint of the paper's B7/RoBERTa-large model (not publicly released)"}


def load(name_or_path: str | Path, device: str | torch.device = "cpu", tokenizer: str | Path | None = None,
         preset: str | None = None):
    """Load a model: `tiny` (seeded random weights), a folder from save_pretrained, a .safetensors or official .pth file,
    `openclip:ARCH[:CKPT]`, or `hf:FOLDER` (a transformers CLIP / Chinese-CLIP / AltCLIP / SigLIP folder; such a
    folder is also recognised without the prefix).

    preset names the release an official .pth comes from (brivl-1.0 or brivl-nmi; see brivl convert --preset).
    """
    name = str(name_or_path)
    refuse_remote_code(tokenizer)  # official.py reads --tokenizer through transformers
    if name.startswith("openclip:"):  # a CLIP-style model for comparisons (local weights or random init)
        return load_openclip(name, device=device)
    path = Path(name).expanduser()
    if name.startswith("hf:") or (path.is_dir() and is_hf_folder(path)):  # a transformers CLIP-family folder
        if tokenizer is not None:
            raise ConfigError(f"{name}: a transformers model uses its folder's own tokenizer; drop --tokenizer")
        return load_hf_clip(name, device=device)
    if name == "tiny":
        with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
            torch.manual_seed(TINY_SEED)  # the tiny preset is defined as these seeded random weights
            model = BriVL(preset_config("tiny"))
    elif name == "brivl-lite" and not path.exists():
        if not (LITE_FOLDER / WEIGHTS_NAME).is_file():
            raise ModelNotFoundError(f"the brivl-lite heads are not in this installation ({LITE_FOLDER}); "
                                     f"build them with `brivl build-default`")
        model = BriVL.from_folder(LITE_FOLDER)
    elif name in _RELEASE_ONLY and not path.exists():
        raise ModelNotFoundError(
            f"{name!r} is a layout, not shipped weights: get {_RELEASE_ONLY[name]}, convert it once with "
            f"`brivl convert FILE.pth OUT_DIR --preset {name} --tokenizer VOCAB` and load OUT_DIR")
    elif path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"{path} holds no {CONFIG_NAME}: not a model folder written by save_pretrained")
        if not (path / WEIGHTS_NAME).is_file():
            raise ModelNotFoundError(f"{path} holds no {WEIGHTS_NAME}")
        model = BriVL.from_folder(path)
    elif path.is_file() and path.suffix == ".safetensors":
        if not (path.parent / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"{path}: no {CONFIG_NAME} beside it, so the model's layout is unknown")
        if path.name != WEIGHTS_NAME:
            raise ModelNotFoundError(f"{path}: expected the weights to be named {WEIGHTS_NAME}; load the folder")
        model = BriVL.from_folder(path.parent)
    elif path.is_file() and path.suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):  # BriVL-1.0-5500w.tar
        model = load_official(path, base=preset, tokenizer=tokenizer)
    elif path.is_file():
        raise CheckpointError(f"{path}: unknown weights format (expected a folder, .safetensors or .pth)")
    else:
        raise ModelNotFoundError(f"no model {name!r}: not a preset ({', '.join(PRESETS)}) "
                                 f"nor an existing folder or file")
    if tokenizer is not None and model.tokenizer is None:
        model.tokenizer = load_tokenizer(str(tokenizer), None)
    return model.to(device).eval()
