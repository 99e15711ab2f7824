"""Hugging Face CLIP-family models (CLIP, Chinese-CLIP, AltCLIP, SigLIP) from a local folder, behind TwoTower.

A folder written by transformers' `save_pretrained` (config.json, the weights, the tokenizer's files and
preprocessor_config.json) is loaded with the family's built-in class; nothing is downloaded and no code from the
folder runs (brivl.hf refuses an `auto_map`). Specs: `hf:PATH`, or the folder itself (its config.json names a
transformers `model_type`). Embeddings are the family's own `get_text_features` / `get_image_features`,
L2-normalised; the folder's processor settings (size, crop, interpolation, mean/std) are applied inside
`encode_image` on tensors, so renders get gradients.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn

from ..errors import CheckpointError, ModelNotFoundError, TokenizerMissingError
from ..hf import hf_config, hf_image_processor, hf_pretrained, hf_tokenizer
from ..inputs import check_pixels, check_texts
from ..pickle_scan import scan_torch_file
from .hf_preprocess import ImageSettings, settings_of

PREFIX = "hf:"
# model_type -> the built-in class (what AutoModel resolves these types to).
SUPPORTED = {"clip": "CLIPModel", "chinese_clip": "ChineseCLIPModel", "altclip": "AltCLIPModel",
             "siglip": "SiglipModel"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
# Any one of these makes a tokenizer transformers can build without code: a fast tokenizer's JSON, a WordPiece
# vocab, a BPE vocab + merges, or a sentencepiece model.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
PROCESSOR_FILE = "preprocessor_config.json"


class PatchMap(nn.Module):
    """The last block's patch tokens as a [n, C, h, w] map: what `llp` hooks, so neuron objectives see a grid."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class HFClip(nn.Module):
    """A transformers CLIP-family model as a TwoTower: unit-norm embeddings, pixels in [0, 1] of any size."""

    def __init__(self, hf: nn.Module, tokenizer, settings: ImageSettings, name: str, folder: str):
        super().__init__()
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.name = name
        self.folder = folder
        self.family = hf.config.model_type
        vision = hf.config.vision_config
        self.grid = int(vision.image_size) // int(vision.patch_size)
        self.llp = PatchMap()
        if not hasattr(hf, "visual_projection") and getattr(hf.vision_model, "head", None) is None:
            raise CheckpointError(f"{folder}: this {self.family} vision tower has no pooling head "
                                  f"(vision_use_head=false), so it gives no image embedding")
        if settings.input_size != int(vision.image_size):
            raise CheckpointError(f"{folder}: {PROCESSOR_FILE} crops to {settings.input_size} px but the vision "
                                  f"tower takes {vision.image_size} px; the two files are of different models")

    # --- the TwoTower protocol ------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the square input the vision tower takes."""
        return self.settings.input_size

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint embedding space."""
        proj = getattr(self.hf, "visual_projection", None)
        return int(proj.out_features) if proj is not None else int(self.hf.config.vision_config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    @property
    def context_length(self) -> int:
        """The most tokens a text may have: the tokenizer's limit, if below the text tower's positions."""
        positions = int(self.hf.config.text_config.max_position_embeddings)
        if self.family == "altclip":  # XLM-R positions start after the padding index
            positions -= int(self.hf.config.text_config.pad_token_id or 0) + 1
        limit = getattr(self.tokenizer, "model_max_length", None) or positions
        return min(int(limit), positions)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids and attention mask [n, L]; a text longer than the context is truncated with a warning."""
        texts, n = check_texts(texts), self.context_length
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
        long = [t for t, k in zip(texts, lengths) if k > n]
        if long:
            warnings.warn(f"{len(long)} text(s) longer than {self.name}'s context of {n} tokens were truncated "
                          f"(first: {long[0][:40]!r})", stacklevel=2)
        # SigLIP was trained on texts padded to the full context, and its processor pads them so.
        padding = "max_length" if self.family == "siglip" else True
        enc = self.tokenizer(texts, padding=padding, truncation=True, max_length=n, return_tensors="pt")
        keep = ("input_ids", "attention_mask")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised text embeddings [n, embed_dim] (the family's get_text_features)."""
        return F.normalize(self.hf.get_text_features(**self.tokenize(texts)).pooler_output, dim=-1)

    def preprocess(self, pixels: Tensor) -> Tensor:
        """[0, 1] RGB of any size -> the vision tower's pixel_values, as the folder's processor; differentiable."""
        return self.settings.apply(check_pixels(pixels).to(self.device))

    def encode_image(self, pixels: Tensor) -> Tensor:
        """L2-normalised image embeddings [n, embed_dim] of RGB pixels in [0, 1]; differentiable in the pixels."""
        out = self.hf.get_image_features(pixel_values=self.preprocess(pixels))
        self.llp(self._grid_of(out.last_hidden_state))  # only for hooks: the embedding does not read it
        return F.normalize(out.pooler_output, dim=-1)

    def feature_layers(self) -> dict[str, nn.Module]:
        """Hookable layers: `llp` (the last block's patch tokens as a [n, C, h, w] map), each vision block
        `block<i>` ([n, tokens, C]), `pooled` (the pooled image token) and `proj` (its projection, when any)."""
        vision = self.hf.vision_model
        layers: dict[str, nn.Module] = {"llp": self.llp}
        layers.update({f"block{i}": m for i, m in enumerate(vision.encoder.layers)})
        head = getattr(vision, "head", None)  # SigLIP pools by attention; the others take the class token
        layers["pooled"] = head if head is not None else vision.post_layernorm
        if getattr(self.hf, "visual_projection", None) is not None:
            layers["proj"] = self.hf.visual_projection
        return layers

    # --- patches (viz.attribution) --------------------------------------------------------------------------
    def _patch_tokens(self, hidden: Tensor) -> Tensor:
        """The patch tokens [n, g*g, C] of a vision output: the class token (if any) dropped."""
        return hidden[:, hidden.shape[1] - self.grid * self.grid:]

    def _grid_of(self, hidden: Tensor) -> Tensor:
        tokens = self._patch_tokens(hidden)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, self.grid, self.grid)

    def patch_embeddings(self, pixels: Tensor) -> Tensor:
        """Each patch token put through the pooled token's head into the joint space [n, g*g, d].

        The image is squeezed to the input square (no crop), so patch i covers cell i of the whole image.
        """
        x = self.settings.apply_square(check_pixels(pixels).to(self.device))
        tokens = self._patch_tokens(self.hf.vision_model(pixel_values=x).last_hidden_state)
        vision = self.hf.vision_model
        head = getattr(vision, "head", None)
        if head is not None:  # SigLIP: attention pooling over one token at a time is that token's own head output
            n, p, c = tokens.shape
            return head(tokens.reshape(n * p, 1, c)).reshape(n, p, -1)
        ln = vision.post_layernorm
        normed = F.layer_norm(tokens, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        return F.linear(normed, self.hf.visual_projection.weight, self.hf.visual_projection.bias)

    def patch_boxes(self) -> Tensor:
        """The patches' boxes [g*g, 4] as (x0, y0, x1, y1) fractions, in the tokens' row-major order."""
        g = self.grid
        return torch.tensor([[c / g, r / g, (c + 1) / g, (r + 1) / g] for r in range(g) for c in range(g)])

    # --- identity -------------------------------------------------------------------------------------------
    def fingerprint_parts(self) -> dict:
        """What identifies the text embeddings: the family, the folder and a hash of the text tower's weights."""
        h = hashlib.blake2b(digest_size=16)
        for key, value in self.hf.state_dict().items():
            if key.startswith(("vision_model.", "visual_projection.")):
                continue
            h.update(key.encode() + str(tuple(value.shape)).encode() + str(value.dtype).encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"kind": "hf", "family": self.family, "name": self.name, "text_weights": h.hexdigest(),
                "context_length": self.context_length}


def is_hf_folder(path: Path) -> bool:
    """Whether a folder holds a transformers config (a top-level `model_type`), not a brivl one."""
    file = path / "config.json"
    if not file.is_file():
        return False
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model_type"), str)


def _check_files(folder: Path) -> None:
    """Name the first file a usable folder lacks."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such folder (hf: takes a local folder written by save_pretrained; "
                                 f"nothing is downloaded)")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{folder} holds no config.json: not a transformers model folder")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelNotFoundError(f"{folder} holds no weights (one of {', '.join(WEIGHT_FILES)})")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise TokenizerMissingError(f"{folder} holds the weights but no tokenizer (none of "
                                    f"{', '.join(TOKENIZER_FILES)}); copy the tokenizer files of the model's release")
    if not (folder / PROCESSOR_FILE).is_file():
        raise ModelNotFoundError(f"{folder} holds the weights but no {PROCESSOR_FILE} (the image size, crop, "
                                 f"mean/std the model expects); copy it from the model's release")


def load_hf_clip(spec: str, device: str | torch.device = "cpu") -> HFClip:
    """Build a TwoTower from 'hf:PATH' (or PATH): a local CLIP / Chinese-CLIP / AltCLIP / SigLIP folder."""
    folder = Path(spec.removeprefix(PREFIX)).expanduser()
    _check_files(folder)
    config = hf_config(folder)  # refuses an auto_map first: no code from the folder runs
    family = getattr(config, "model_type", None)
    if family not in SUPPORTED:
        raise ModelNotFoundError(f"{folder}: model_type {family!r} is not a supported two-tower family; brivl "
                                 f"loads {', '.join(f'{k} ({v})' for k, v in SUPPORTED.items())}")
    if not any((folder / f).is_file() for f in WEIGHT_FILES[:2]):  # transformers would read pickles: scan them first
        for file in sorted(folder.glob("pytorch_model*.bin")):
            scan_torch_file(file)  # tensors and plain containers only, storages that fit the file
    model = hf_pretrained(getattr(transformers, SUPPORTED[family]), folder)
    settings = settings_of(hf_image_processor(folder), str(folder))
    return HFClip(model, hf_tokenizer(folder), settings, folder.resolve().name, str(folder)).to(device).eval()
