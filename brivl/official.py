"""Import of the official BriVL release (.pth with a 'learnable' state dict) into this package's format."""
from __future__ import annotations

import warnings
from pathlib import Path

from torch import Tensor

from .checkpoint import CheckpointError, count_layers, load_into, load_torch_pickle, official_state_dict
from .config import BriVLConfig, preset
from .model.brivl import BriVL
from .tokenizer import load_tokenizer

# The CNN width of the released checkpoint tells which preset's backbone it was trained with. Both releases
# are B5 (2048): their weights look alike, so the Nature Communications one must be named (--preset brivl-nmi).
_PRESET_BY_CNN_WIDTH = {2048: "brivl-1.0", 2560: "brivl-paper"}
RELEASES = {"brivl-1.0": "BAAI WuDao BriVL-1.0 (BriVL-1.0-5500w): 380 px, detector boxes from its JSONL",
            "brivl-nmi": "Nature Communications release (BriVL w/ RoBERTa-base): 456 px, 6x6 grid + whole image"}


def release_of(cfg: BriVLConfig) -> str:
    """Which official release a config was converted from (its preset, recorded in the name), in words."""
    base = cfg.name.removesuffix("-converted")
    if base in RELEASES:
        return f"{base}: {RELEASES[base]}"
    return f"{base} (not an official release)" if cfg.name.endswith("-converted") else "none (not converted)"


def config_from_official(state: dict[str, Tensor], base: str | None = None) -> BriVLConfig:
    """A config that fits an official state dict: the preset's layout with the sizes read from the weights."""
    head = state.get("imgencoder.backbone.conv_head.weight")
    if base is None:
        width = int(head.shape[0]) if head is not None else None
        if width not in _PRESET_BY_CNN_WIDTH:
            raise CheckpointError(f"cannot tell the CNN of this checkpoint (conv_head width {width}); "
                                  f"name a preset: {', '.join(_PRESET_BY_CNN_WIDTH.values())}")
        base = _PRESET_BY_CNN_WIDTH[width]
    cfg = preset(base)
    try:
        fc2 = state["imgencoder.learnable.imgFC.fc2.weight"]
        pool = state["imgencoder.learnable.max_pool.0.weight"]
        words = state["textencoder.backbone.bert.embeddings.word_embeddings.weight"]
        tfc1 = state["textencoder.learnable.textFC.fc1.weight"]
        classifier = state.get("imgencoder.backbone.classifier.weight")
    except KeyError as e:
        raise CheckpointError(f"official checkpoint lacks {e}, so its sizes cannot be read") from None
    cfg.embed_dim = int(fc2.shape[0])
    cfg.image.patch_dim = int(pool.shape[0])
    cfg.image.mlp_hidden = int(state["imgencoder.learnable.imgFC.fc1.weight"].shape[0])
    if classifier is not None:
        cfg.image.num_classes = int(classifier.shape[0])
    cfg.image.att_layers = count_layers(state, r"^imgencoder\.learnable\.imgAtt\.layers\.(\d+)\.")
    ff = state.get("imgencoder.learnable.imgAtt.layers.0.linear1.weight")
    if ff is not None:
        cfg.image.att_ff_dim = int(ff.shape[0])
    text = cfg.text
    text.backbone["vocab_size"], text.backbone["hidden_size"] = (int(n) for n in words.shape)
    text.backbone["num_hidden_layers"] = count_layers(state, r"^textencoder\.backbone\.bert\.encoder\.layer\.(\d+)\.")
    inter = state.get("textencoder.backbone.bert.encoder.layer.0.intermediate.dense.weight")
    if inter is not None:
        text.backbone["intermediate_size"] = int(inter.shape[0])
    pos = state.get("textencoder.backbone.bert.embeddings.position_embeddings.weight")
    if pos is not None:
        text.backbone["max_position_embeddings"] = int(pos.shape[0])
    text.mlp_hidden = int(tfc1.shape[0])
    text.att_layers = count_layers(state, r"^textencoder\.learnable\.textAtt\.layers\.(\d+)\.")
    tff = state.get("textencoder.learnable.textAtt.layers.0.linear1.weight")
    if tff is not None:
        text.att_ff_dim = int(tff.shape[0])
    # The release attends to padding; converted models keep that so they reproduce its embeddings.
    text.use_attention_mask = False
    if text.tokenizer != "builtin:chars":
        text.tokenizer = ""  # the release ships none: it comes with --tokenizer or stays missing
    cfg.name = f"{base}-converted"
    cfg.validate()
    return cfg


def load_official(path: str | Path, base: str | None = None, tokenizer: str | Path | None = None,
                  max_len: int | None = None):
    """Build a BriVL model from an official .pth (weights_only load; momentum copies and queues ignored).

    max_len: the padded text length (default: the config's 80); the release attends to padding, so it must be
    the length the embeddings to match were made with (the Nature Communications example.py uses 32).
    """
    state = official_state_dict(load_torch_pickle(path), str(path))
    cfg = config_from_official(state, base)
    if base is None and cfg.name == "brivl-1.0-converted":
        warnings.warn(f"{Path(path).name}: taken as BriVL-1.0 (380 px, detector boxes); for the Nature "
                      f"Communications release (456 px, grid boxes) pass --preset brivl-nmi", stacklevel=2)
    if max_len is not None:
        cfg.text.max_len = max_len
        cfg.validate()
    tok = load_tokenizer(str(tokenizer), None) if tokenizer else None
    if tok is not None:
        cfg.text.tokenizer = ""  # the given one is saved beside the weights, not rebuilt from a preset
    model = BriVL(cfg, tokenizer=tok)
    load_into(model, state, str(path))
    return model.eval()
