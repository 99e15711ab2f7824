"""The BriVL two-tower model: the one `TwoTower` implementation of the core, with save/load."""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from ..boxes import Boxes, check_boxes, pack_boxes, scale_boxes
from ..checkpoint import WEIGHTS_NAME, load_into, load_safetensors, save_safetensors
from ..config import BriVLConfig
from ..errors import TokenizerMissingError
from ..hf import refuse_remote_code
from ..inputs import check_pixels, check_texts
from ..lite.assemble import fill_package_backbones, package_backbone_keys
from ..tokenizer import check_fits, load_tokenizer
from .image_encoder import ImageEncoder
from .meta import assign_state, parameters_on_meta, shares_parameters
from .text_encoder import TextEncoder


def _self_contained_tokenizer(config: BriVLConfig) -> bool:
    """Whether the config names a built-in or package tokenizer: one that needs no files beside the weights."""
    return config.text.tokenizer.startswith(("builtin:", "package:"))


class BriVL(nn.Module):
    """Image and text towers mapping into one L2-normalised joint space (module names as in the release)."""

    def __init__(self, config: BriVLConfig, tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.imgencoder = ImageEncoder(config.image, config.embed_dim)
        self.textencoder = TextEncoder(config.text, config.embed_dim)
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)
        self._tokenizer = tokenizer
        # A built-in or package tokenizer needs no files beside the weights: it is built on first use, since
        # building brivl-lite's (250k pieces) is 0.8 s of a 1.4 s load that image-only work never needs.
        self._tokenizer_pending = tokenizer is None and _self_contained_tokenizer(config)
        self.eval()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The text tokenizer (None if the model has none); a built-in or package one is built on first use."""
        if self._tokenizer_pending:
            tokenizer = load_tokenizer(self.config.text.tokenizer)
            self._check_tokenizer(tokenizer)
            self._tokenizer, self._tokenizer_pending = tokenizer, False
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: PreTrainedTokenizerBase | None) -> None:
        if value is not None:
            self._check_tokenizer(value)
        self._tokenizer, self._tokenizer_pending = value, False

    def _check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Refuse a tokenizer whose ids run past the text backbone's embedding rows (warn if it uses few)."""
        rows = self.textencoder.backbone.bert.get_input_embeddings().num_embeddings
        check_fits(tokenizer, rows, self.config.text.backbone_name)

    # --- the TwoTower protocol -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The config's name (e.g. brivl-lite); brivl.twotower.Described."""
        return self.config.name

    def fingerprint_parts(self) -> dict:
        """What the embeddings depend on besides the weights: the whole config (brivl.twotower.Described)."""
        return {"config": self.config.to_dict()}

    @property
    def image_size(self) -> int:
        """Side of the square input the image tower resizes to."""
        return self.config.image.image_size

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint embedding space."""
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str], warn: bool = True) -> dict[str, Tensor]:
        """Token ids and attention mask for texts, truncated to max_len (with a warning, or counted in 'truncated')."""
        texts = check_texts(texts)
        if self.tokenizer is None:
            raise TokenizerMissingError(
                f"this {self.config.name} model has no tokenizer: put the tokenizer files of "
                f"{self.config.text.backbone_name or 'its text backbone'} beside its weights")
        max_len = self.config.text.max_len
        if self.config.text.prefix:
            texts = [self.config.text.prefix + t for t in texts]
        # The release pads to max_len and attends to padding; with the mask on, the padded length
        # does not change the result, so pad only to the longest text.
        padding = "longest" if self.config.text.use_attention_mask else "max_length"
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=max_len, return_tensors="pt")
        # Only texts that fill max_len can have been cut: tokenize those again, whole, to know by how much.
        full = torch.nonzero(enc["attention_mask"].sum(dim=1) >= max_len).flatten().tolist()
        whole = self.tokenizer([texts[i] for i in full], add_special_tokens=True)["input_ids"] if full else []
        lengths = {i: len(ids) for i, ids in zip(full, whole)}
        long = [i for i in full if lengths[i] > max_len]
        if long and warn:
            warnings.warn(f"{len(long)} text(s) longer than {max_len} tokens were truncated "
                          f"(text {long[0]} had {lengths[long[0]]} tokens)", stacklevel=3)
        out = {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}
        if not warn:
            out["truncated"] = torch.tensor(len(long))
        return out

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised text embeddings [n, embed_dim]."""
        return self.textencoder(**self.tokenize(texts))

    def encode_image(self, pixels: Tensor, boxes: Sequence[Boxes | None] | Tensor | None = None) -> Tensor:
        """L2-normalised image embeddings [n, embed_dim] of RGB pixels in [0, 1], any size.

        boxes: per image, up to box_grid^2 (36) boxes [x1, y1, x2, y2] in pixels of the given image (None: the
        grid), to which the model adds the whole image; padded and masked as the release does. Default: the grid.
        """
        pixels = check_pixels(pixels).to(self.device)
        if boxes is None:
            return self.imgencoder(pixels)
        packed, pad = self.pack_boxes(pixels, boxes)
        return self.imgencoder(pixels, pad_mask=pad, boxes=packed)

    def pack_boxes(self, pixels: Tensor, boxes: Sequence[Boxes | None] | Tensor) -> tuple[Tensor, Tensor]:
        """Checked boxes [n, P, 4] in the model's input pixels and their padding mask [n, P] (True: padding)."""
        cfg = self.config.image
        n, _, h, w = pixels.shape
        checked = check_boxes(boxes, n, h, w, cfg.num_patches - 1)
        scaled = [None if b is None else scale_boxes(b, h, w, cfg.image_size) for b in checked]
        packed, pad = pack_boxes(scaled, self.imgencoder.boxes, cfg.image_size)
        return packed.to(self.device), pad.to(self.device)

    def feature_layers(self) -> dict[str, nn.Module]:
        """Layers a neuron objective may hook: `llp` (the map MSPP pools) and each CNN stage `block<i>`."""
        layers: dict[str, nn.Module] = {"llp": self.imgencoder.llp}
        blocks = getattr(self.imgencoder.backbone, "blocks", None)
        if isinstance(blocks, nn.Sequential):
            layers.update({f"block{i}": b for i, b in enumerate(blocks)})
        return layers

    def patch_embeddings(self, pixels: Tensor) -> Tensor:
        """The 37 MSPP patches mapped into the joint space [n, 37, embed_dim], L2-normalised.

        Each patch vector leaves the self-attention block and goes through the tower's MLP on its own;
        the image embedding itself is the MLP of their mean.
        """
        attended = self.imgencoder.attend(check_pixels(pixels).to(self.device))
        return F.normalize(self.imgencoder.learnable["imgFC"](attended), dim=-1)

    def patch_boxes(self) -> Tensor:
        """The 37 MSPP boxes [x0, y0, x1, y1] as fractions of the image side (grid boxes, then the whole image)."""
        return self.imgencoder.boxes.cpu() / self.image_size

    # --- saving and loading ----------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, backbones: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write model.safetensors, config.json and the tokenizer files into folder (each atomically).

        backbones=False leaves out backbones that installed packages carry (config `backbone_weights`),
        for the small files brivl-lite ships; dtype (e.g. torch.float16) stores floating weights smaller.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if not backbones:
            skip = package_backbone_keys(self)
            state = {k: v for k, v in state.items() if k not in skip}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_safetensors(state, folder / WEIGHTS_NAME, metadata={"format": "pt", "brivl": self.config.name})
        self.config.save(folder)
        # Checked first: a self-contained tokenizer is not saved, so it need not be built for this.
        if not _self_contained_tokenizer(self.config) and self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path, *, skip_init: bool = True,
                    timings: dict[str, float] | None = None) -> BriVL:
        """Load a model written by save_pretrained (no download, no pickle).

        skip_init=False builds the modules with random weights before overwriting them (the slower way,
        kept for tests and benchmarks); `timings`, if given, receives the seconds spent in each phase.
        """
        folder = Path(folder)
        weights = folder / WEIGHTS_NAME
        refuse_remote_code(folder)  # before anything reads the folder's files
        with _timed(timings, "config"):
            config = BriVLConfig.load(folder)
        with _timed(timings, "weights"):  # read before the slow work, so a damaged file fails fast
            state = load_safetensors(weights)
        with _timed(timings, "tokenizer"):  # a built-in or package one waits for first use (see __init__)
            tokenizer = None if _self_contained_tokenizer(config) else _folder_tokenizer(config, folder)
        with _timed(timings, "construct"):
            model, empty = cls._construct(config, tokenizer, skip_init)
        with _timed(timings, "backbones"):
            if config.image.backbone_weights or config.text.backbone_weights:
                state = fill_package_backbones(model, state)  # a heads-only file: backbones from their packages
        with _timed(timings, "assign"):
            (assign_state if empty else load_into)(model, state, str(weights))
        return model.eval()

    @classmethod
    def _construct(cls, config: BriVLConfig, tokenizer: PreTrainedTokenizerBase | None,
                   skip_init: bool) -> tuple[BriVL, bool]:
        """(model, whether its parameters are empty meta tensors awaiting assign_state)."""
        if skip_init:
            with parameters_on_meta():
                model = cls(config, tokenizer=tokenizer)
            if not shares_parameters(model):
                return model, True
            # Tied weights must stay one tensor, which assigning would undo: build them the slow way.
        return cls(config, tokenizer=tokenizer), False

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs) -> "BriVL":
        """Load a folder written by save_pretrained (names, presets and other formats: brivl.load, the hub)."""
        return cls.from_folder(folder, **kwargs)


def _folder_tokenizer(config: BriVLConfig, folder: Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer a saved model names (built in, from a package or beside the weights), None if absent."""
    try:
        return load_tokenizer(config.text.tokenizer, folder)
    except TokenizerMissingError:
        return None  # images still work; encode_text says what is missing


@contextmanager
def _timed(timings: dict[str, float] | None, phase: str) -> Iterator[None]:
    """Add the seconds the block takes to timings[phase], when timings is given."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
