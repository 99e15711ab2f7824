"""OpenCLIP models behind the TwoTower protocol, for the paper's CLIP comparisons (Fig. 3a, Fig. 4a/b).

Nothing is downloaded: the architecture comes from open_clip's bundled configs (or `tiny`, a small config for
tests), the weights from a local checkpoint or random init, and the text goes through open_clip's own BPE tokenizer,
whose vocabulary ships inside the package. Specs:

    openclip:ViT-B-32                  random init
    openclip:ViT-B-32:/path/ckpt.pt    weights from a local .pt/.pth (torch.load weights_only=True) or .safetensors
    openclip:tiny                      a 2-layer ViT/text transformer with 32-d embeddings (tests)

Configs whose text tower or tokenizer lives on the Hugging Face hub (hf_model_name / hf_tokenizer_name, SigLIP)
are refused: they would need a download.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import check_state_dict, load_safetensors, load_torch_pickle
from ..errors import CheckpointError, ModelNotFoundError
from ..inputs import check_pixels, check_texts

PREFIX = "openclip:"
# A small CLIP for tests: ViT 2x64 on 32 px (8 px patches), text transformer 2x32 over the full CLIP BPE vocabulary.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_SEED = 0


class OpenCLIP(nn.Module):
    """An open_clip CLIP as a TwoTower model: unit-norm embeddings, pixels in [0, 1] of any size."""

    def __init__(self, clip: nn.Module, name: str, tokenizer, checkpoint: str | None = None):
        super().__init__()
        self.clip = clip.eval()
        self.name = name
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        pre = getattr(clip.visual, "preprocess_cfg", {}) or {}
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # deferred: open_clip is the optional [openclip] extra

        self.register_buffer("mean", torch.tensor(pre.get("mean", OPENAI_DATASET_MEAN)).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(pre.get("std", OPENAI_DATASET_STD)).view(1, 3, 1, 1),
                             persistent=False)
        size = getattr(clip.visual, "image_size", None) or pre.get("size", 224)
        self._size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.interpolation = "bicubic" if pre.get("interpolation", "bicubic") == "bicubic" else "bilinear"

    # --- the TwoTower protocol ------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the square input the image tower takes."""
        return self._size

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint embedding space."""
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, Tensor):
            return int(proj.shape[-1])
        return int(self.clip.visual.output_dim)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """CLIP BPE token ids [n, context_length] (truncated to the context, as open_clip does)."""
        return self.tokenizer(check_texts(texts)).to(self.device)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """L2-normalised text embeddings [n, embed_dim]."""
        return F.normalize(self.clip.encode_text(self.tokenize(texts)), dim=-1)

    def preprocess(self, pixels: Tensor) -> Tensor:
        """[0, 1] RGB of any size -> the model's input: shorter side resized to image_size, centre crop, normalised.

        As open_clip's own preprocessing (resize the shorter side, centre crop), but on tensors and differentiable.
        """
        pixels = check_pixels(pixels).to(self.device)
        h, w = pixels.shape[-2:]
        s = self._size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            pixels = F.interpolate(pixels, size=(nh, nw), mode=self.interpolation, align_corners=False,
                                   antialias=True).clamp(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            pixels = pixels[..., top:top + s, left:left + s]
        return (pixels - self.mean) / self.std

    def encode_image(self, pixels: Tensor) -> Tensor:
        """L2-normalised image embeddings [n, embed_dim] of RGB pixels in [0, 1]; differentiable in the pixels."""
        return F.normalize(self.clip.encode_image(self.preprocess(pixels)), dim=-1)

    def feature_layers(self) -> dict[str, nn.Module]:
        """Hookable layers: `llp` (ResNet: layer4, the map before attention pooling; ViT: the last block's tokens)
        and each stage/block `block<i>`."""
        visual = self.clip.visual
        layers: dict[str, nn.Module] = {}
        if hasattr(visual, "layer4"):  # ModifiedResNet
            stages = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        elif hasattr(visual, "transformer"):  # VisionTransformer: blocks give [n, tokens, width]
            stages = list(visual.transformer.resblocks)
        else:  # timm trunks and others
            trunk = getattr(visual, "trunk", visual)
            stages = list(getattr(trunk, "blocks", getattr(trunk, "stages", [])))
        if stages:
            layers["llp"] = stages[-1]
            layers.update({f"block{i}": m for i, m in enumerate(stages)})
        return layers

    # --- identity -------------------------------------------------------------------------------------------
    def fingerprint_parts(self) -> dict:
        """What identifies the text embeddings: the architecture, the checkpoint and the text-tower weights."""
        h = hashlib.blake2b(digest_size=16)
        for key, value in self.clip.state_dict().items():
            if key.startswith("visual."):
                continue
            h.update(key.encode())
            h.update(str(tuple(value.shape)).encode() + str(value.dtype).encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"kind": "openclip", "name": self.name, "text_weights": h.hexdigest(),
                "context_length": int(getattr(self.tokenizer, "context_length", 0))}


def _config(name: str) -> dict:
    import open_clip  # deferred: open_clip is the optional [openclip] extra

    if name == "tiny":
        return copy.deepcopy(TINY_CONFIG)
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        known = open_clip.list_models()
        raise ModelNotFoundError(f"no OpenCLIP architecture {name!r}; open_clip knows {len(known)}, e.g. "
                                 f"{', '.join(k for k in known if k.startswith(('ViT-B', 'RN50')))}")
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name") or text.get("hf_tokenizer_name") or "siglip" in name.lower():
        raise ModelNotFoundError(f"OpenCLIP {name!r} takes its text tower or tokenizer from the Hugging Face hub, "
                                 f"which would be downloaded; use a CLIP architecture with the built-in BPE tokenizer "
                                 f"(e.g. ViT-B-32, RN50)")
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False  # never fetch trunk weights
    return cfg


def _load_state(path: Path) -> dict[str, Tensor]:
    raw = load_safetensors(path) if path.suffix == ".safetensors" else load_torch_pickle(path)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or {{'state_dict': ...}})")
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return raw


def load_openclip(spec: str, device: str | torch.device = "cpu") -> OpenCLIP:
    """Build an OpenCLIP TwoTower from 'openclip:NAME[:CHECKPOINT]' (or 'NAME[:CHECKPOINT]'); nothing downloaded."""
    import open_clip  # deferred: open_clip is the optional [openclip] extra

    body = spec.removeprefix(PREFIX)
    name, _, ckpt = body.partition(":")
    if not name:
        raise ModelNotFoundError(f"{spec!r}: name an OpenCLIP architecture, e.g. openclip:ViT-B-32[:/path/ckpt.pt]")
    cfg = _config(name)
    path = Path(ckpt).expanduser() if ckpt else None
    if path is not None and not path.is_file():
        raise ModelNotFoundError(f"{path}: no such OpenCLIP checkpoint file (give a local .pt, .pth or .safetensors; "
                                 f"nothing is downloaded)")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip logs "No pretrained weights loaded ... initialized randomly"
    try:
        with torch.random.fork_rng(devices=[]):
            if name == "tiny":
                torch.manual_seed(TINY_SEED)  # like brivl's tiny: defined as these seeded random weights
            clip = open_clip.create_model("ViT-B-32" if name == "tiny" else name, pretrained=None,
                                          load_weights=False, pretrained_image=False, pretrained_text=False,
                                          **(cfg if name == "tiny" else {}))
    finally:
        root.setLevel(level)
    if path is not None:
        from open_clip.model import resize_pos_embed, resize_text_pos_embed  # deferred: open_clip is the optional [openclip] extra

        state = _load_state(path)
        resize_pos_embed(state, clip)
        resize_text_pos_embed(state, clip)
        if "logit_scale" in state and state["logit_scale"].ndim != clip.logit_scale.ndim:
            state["logit_scale"] = state["logit_scale"].reshape(clip.logit_scale.shape)
        try:
            check_state_dict(clip, state, str(path))
        except CheckpointError as e:
            raise CheckpointError(f"{e} (is it a checkpoint of OpenCLIP {name}?)") from None
        clip.load_state_dict(state, strict=True)
    if name == "tiny":
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    else:  # a built-in CLIP config: the BPE SimpleTokenizer over the vocabulary inside the package
        tokenizer = open_clip.get_tokenizer(name)
    return OpenCLIP(clip, name, tokenizer, str(path) if path else None).to(device).eval()
