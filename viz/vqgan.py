"""VQGAN models: taming-transformers' checkpoints loaded safely and run on the project's own modules.

A taming checkpoint is a `.ckpt` (a torch pickle whose `state_dict` holds `encoder.*`, `decoder.*`,
`quant_conv.*`, `post_quant_conv.*` and `quantize.embedding.weight`, or `quantize.proj.*` +
`quantize.embed.weight` for Gumbel-VQ) plus a `.yaml` holding `ddconfig`, `embed_dim` and `n_embed`. The modules
below are named exactly like taming's (`Encoder`, `Decoder`, `ResnetBlock`, ...), so its keys load without any
mapping; tests/test_vqgan_parity.py proves the decoded images equal those of taming's own `VQModel`.

Loading never runs code from a file: `torch.load(weights_only=True)` first; a Lightning checkpoint that also
pickles training objects (callbacks, hyper-parameters) is read by a restricted unpickler that rebuilds tensors and
plain containers, replaces known training classes (pytorch_lightning, omegaconf, numpy, ...) by inert stand-ins
that are never called, and refuses every other global (os.system, builtins.eval, ...) by name.
Our own weights are safetensors with a JSON config beside them (DESIGN.md).
"""
from __future__ import annotations

import _codecs
import dataclasses
import io
import json
import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch._weights_only_unpickler import _get_allowed_globals

from brivl.assets import asset_folder
from brivl.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    check_state_dict,
    load_safetensors,
    save_safetensors,
)
from brivl.pickle_scan import admitted, scan_torch_file

WEIGHTS_NAME = "vqgan.safetensors"
CONFIG_NAME = "vqgan.json"
LITE_FOLDER = asset_folder("vqgan-lite")  # package data of brivl, found by importlib.resources


class VQGANError(CheckpointError):
    """A VQGAN checkpoint or config that cannot be read, is unsafe, or does not fit; the message says which file."""


# --- config ---------------------------------------------------------------------------------------------------

@dataclass
class VQGANConfig:
    """taming's `ddconfig` plus the codebook (`embed_dim`, `n_embed`) and the quantiser kind ("vq" or "gumbel")."""

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 256
    double_z: bool = False
    embed_dim: int = 256
    n_embed: int = 1024
    quantizer: str = "vq"
    norm_groups: int = 32  # taming's GroupNorm groups; a narrow model needs fewer (see Normalize)
    name: str = "vqgan"
    extra: dict[str, Any] = field(default_factory=dict)  # provenance (training recipe, PSNR); never read back in

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.quantizer not in ("vq", "gumbel"):
            raise VQGANError(f"quantizer must be 'vq' or 'gumbel', got {self.quantizer!r}")
        g = self.norm_groups
        if g < 1 or self.ch % g or any((self.ch * m) % g for m in self.ch_mult):
            raise VQGANError(f"ch x ch_mult must be multiples of norm_groups={g} (GroupNorm), got ch={self.ch}, "
                             f"ch_mult={list(self.ch_mult)}")
        if self.double_z:
            raise VQGANError("double_z=true is a KL autoencoder, not a VQGAN")

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side (16 for an f16 model)."""
        return 2 ** (len(self.ch_mult) - 1)

    def ddconfig(self) -> dict[str, Any]:
        """The taming `ddconfig` mapping."""
        keys = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv",
                "in_channels", "resolution", "z_channels", "double_z")
        d = {k: getattr(self, k) for k in keys}
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> VQGANConfig:
        """Build from our JSON dict, refusing unknown keys by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise VQGANError(f"{source}: unknown VQGAN config key(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise VQGANError(f"{source}: bad VQGAN config: {e}") from None

    @classmethod
    def from_taming(cls, data: Mapping[str, Any], source: str = "yaml") -> VQGANConfig:
        """From a taming yaml (full `model: {target, params}` or just the params)."""
        target = ""
        if "model" in data and isinstance(data["model"], Mapping):
            target = str(data["model"].get("target", ""))
            data = data["model"].get("params", {})
        if not isinstance(data, Mapping) or "ddconfig" not in data:
            raise VQGANError(f"{source}: no 'ddconfig' found (expected taming's model.params.ddconfig)")
        missing = [k for k in ("embed_dim", "n_embed") if k not in data]
        if missing:
            raise VQGANError(f"{source}: missing {', '.join(missing)} beside ddconfig")
        dd = dict(data["ddconfig"])
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in dd.items() if k in names}
        quantizer = "gumbel" if "gumbel" in target.lower() else "vq"
        try:
            return cls(**kept, embed_dim=int(data["embed_dim"]), n_embed=int(data["n_embed"]), quantizer=quantizer,
                       name=Path(source).stem)
        except TypeError as e:
            raise VQGANError(f"{source}: bad ddconfig: {e}") from None


# --- taming's modules, same names ----------------------------------------------------------------------------

def nonlinearity(x: Tensor) -> Tensor:
    """Swish, as taming writes it."""
    return x * torch.sigmoid(x)


def Normalize(in_channels: int, groups: int = 32) -> nn.GroupNorm:  # taming's name
    """taming's GroupNorm: 32 groups, eps 1e-6.

    With one channel per group (a 32-wide level) it becomes an instance norm that erases each image's mean colour
    per channel; a narrow model keeps taming's 4+ channels per group with fewer groups.
    """
    return nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    """Nearest 2x, then a 3x3 conv."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """A stride-2 3x3 conv after taming's asymmetric (right/bottom) zero pad."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """Norm-swish-conv twice with a (1x1 or 3x3) shortcut when the width changes; no timestep embedding."""

    def __init__(self, *, in_channels: int, out_channels: int | None = None, conv_shortcut: bool = False,
                 dropout: float = 0.0, groups: int = 32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels, self.use_conv_shortcut = in_channels, out_channels, conv_shortcut
        self.norm1 = Normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels, with 1x1 convs for q, k, v and the output."""

    def __init__(self, in_channels: int, groups: int = 32):
        super().__init__()
        self.norm = Normalize(in_channels, groups)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (t.reshape(b, 1, c, hh * ww).transpose(-1, -2) for t in (self.q(h), self.k(h), self.v(h)))
        # scaled_dot_product_attention is taming's softmax(q k^T / sqrt(c)) v, fused (less memory per step)
        h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


def _blocks(cfg: VQGANConfig, block_in: int, block_out: int, n: int, with_attn: bool) -> tuple[nn.ModuleList,
                                                                                              nn.ModuleList]:
    block, attn = nn.ModuleList(), nn.ModuleList()
    for _ in range(n):
        block.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=cfg.dropout,
                                 groups=cfg.norm_groups))
        block_in = block_out
        if with_attn:
            attn.append(AttnBlock(block_in, cfg.norm_groups))
    return block, attn


def _middle(cfg: VQGANConfig, ch: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(in_channels=ch, out_channels=ch, dropout=cfg.dropout, groups=cfg.norm_groups)
    mid.attn_1 = AttnBlock(ch, cfg.norm_groups)
    mid.block_2 = ResnetBlock(in_channels=ch, out_channels=ch, dropout=cfg.dropout, groups=cfg.norm_groups)
    return mid


class Encoder(nn.Module):
    """taming's Encoder: conv_in, `down` levels of ResnetBlocks (+attention) and Downsample, middle, conv_out."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.num_resolutions, self.num_res_blocks = len(cfg.ch_mult), cfg.num_res_blocks
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        curr_res, in_ch_mult = cfg.resolution, (1,) + cfg.ch_mult
        self.down = nn.ModuleList()
        for i in range(self.num_resolutions):
            down = nn.Module()
            down.block, down.attn = _blocks(cfg, cfg.ch * in_ch_mult[i], cfg.ch * cfg.ch_mult[i], cfg.num_res_blocks,
                                            curr_res in cfg.attn_resolutions)
            if i != self.num_resolutions - 1:
                down.downsample = Downsample(cfg.ch * cfg.ch_mult[i], cfg.resamp_with_conv)
                curr_res //= 2
            self.down.append(down)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.mid = _middle(cfg, block_in)
        self.norm_out = Normalize(block_in, cfg.norm_groups)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for i, down in enumerate(self.down):
            for j, block in enumerate(down.block):
                h = block(h)
                if len(down.attn) > 0:
                    h = down.attn[j](h)
            if i != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    """taming's Decoder: conv_in, middle, `up` levels (num_res_blocks + 1 ResnetBlocks, Upsample), conv_out."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.num_resolutions = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        curr_res = cfg.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1)
        self.mid = _middle(cfg, block_in)
        self.up = nn.ModuleList()
        for i in reversed(range(self.num_resolutions)):
            up = nn.Module()
            block_out = cfg.ch * cfg.ch_mult[i]
            up.block, up.attn = _blocks(cfg, block_in, block_out, cfg.num_res_blocks + 1,
                                        curr_res in cfg.attn_resolutions)
            block_in = block_out
            if i != 0:
                up.upsample = Upsample(block_in, cfg.resamp_with_conv)
                curr_res *= 2
            self.up.insert(0, up)  # prepend: up[0] is the full-resolution level, as in taming's keys
        self.norm_out = Normalize(block_in, cfg.norm_groups)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(self.num_resolutions)):
            up = self.up[i]
            for j, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[j](h)
            if i != 0:
                h = up.upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


def nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """Index [n, h, w] of the codebook row [K, d] nearest (Euclidean) to every latent vector of z [n, d, h, w]."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    d = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
    return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantiser (taming's VectorQuantizer/VectorQuantizer2; key `embedding.weight`)."""

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)

    @property
    def codebook(self) -> Tensor:
        """The code vectors [n_e, e_dim]."""
        return self.embedding.weight

    def indices(self, z: Tensor) -> Tensor:
        """Index [n, h, w] of the nearest code of every latent vector z [n, e_dim, h, w] (Euclidean)."""
        return nearest_codes(z, self.codebook)


class GumbelQuantize(nn.Module):
    """taming's Gumbel-VQ quantiser: `proj` gives code logits, `embed` holds the codes; decoding uses the argmax."""

    def __init__(self, num_hiddens: int, embedding_dim: int, n_embed: int):
        super().__init__()
        self.n_e, self.e_dim = n_embed, embedding_dim
        self.proj = nn.Conv2d(num_hiddens, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embedding_dim)

    @property
    def codebook(self) -> Tensor:
        """The code vectors [n_e, e_dim]."""
        return self.embed.weight

    def indices(self, z: Tensor) -> Tensor:
        """The most likely code [n, h, w] of every pre-quantisation vector z [n, num_hiddens, h, w]."""
        return self.proj(z).argmax(1)


class VQGAN(nn.Module):
    """A VQGAN autoencoder: `encode` images in [0,1] to latents, `quantize`, `decode` latents to images in [0,1].

    Keys follow taming's VQModel (`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`, `quantize.*`).
    """

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        if config.quantizer == "gumbel":
            self.quantize: VectorQuantizer | GumbelQuantize = GumbelQuantize(config.z_channels, config.embed_dim,
                                                                             config.n_embed)
        else:
            self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)

    @property
    def factor(self) -> int:
        """Downsampling factor between pixels and latent cells."""
        return self.config.factor

    @property
    def codebook(self) -> Tensor:
        """The code vectors [n_embed, embed_dim]."""
        return self.quantize.codebook

    def encode(self, images: Tensor) -> Tensor:
        """Pre-quantisation latents [n, embed_dim, H/f, W/f] of images [n, 3, H, W] in [0, 1] (H, W multiples of f)."""
        h = self.quant_conv(self.encoder(images * 2 - 1))
        if self.config.quantizer == "gumbel":
            return self.codebook[self.quantize.indices(h)].permute(0, 3, 1, 2)
        return h

    def quantize_st(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_q, indices): the nearest codes of z with a straight-through gradient to z (d z_q / d z = I)."""
        idx = nearest_codes(z, self.codebook)  # Gumbel too: its encode already returns code vectors
        zq = self.codebook[idx].permute(0, 3, 1, 2)
        return z + (zq - z).detach(), idx

    def decode_raw(self, zq: Tensor) -> Tensor:
        """taming's `decode`: images in about [-1, 1] from quantised latents."""
        return self.decoder(self.post_quant_conv(zq))

    def decode(self, zq: Tensor) -> Tensor:
        """Images [n, 3, H, W] in [0, 1] from quantised latents (clamped, gradient kept where it points inward)."""
        return clamp_with_grad(self.decode_raw(zq).add(1).div(2), 0.0, 1.0)

    def decode_indices(self, idx: Tensor) -> Tensor:
        """Images in [0, 1] from code indices [n, h, w]."""
        return self.decode(self.codebook[idx].permute(0, 3, 1, 2))

    def reconstruct(self, images: Tensor) -> Tensor:
        """Encode, quantise and decode images in [0, 1] (sides cropped down to multiples of the factor)."""
        f = self.factor
        h, w = images.shape[-2] // f * f, images.shape[-1] // f * f
        zq, _ = self.quantize_st(self.encode(images[..., :h, :w]))
        return self.decode(zq)


class _ClampWithGrad(torch.autograd.Function):
    """Clamp whose gradient still flows where following it would bring the value back inside the range."""

    @staticmethod
    def forward(ctx, x: Tensor, lo: float, hi: float) -> Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad; keep the gradient when that step points towards the range.
        return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None


def clamp_with_grad(x: Tensor, lo: float, hi: float) -> Tensor:
    """x clamped to [lo, hi]; unlike clamp, pixels stuck outside still get gradients that pull them back in."""
    return _ClampWithGrad.apply(x, lo, hi)


# --- safe reading of taming's .ckpt ------------------------------------------------------------------------------

# Classes that Lightning checkpoints pickle beside the weights (callbacks, hyper-parameters, optimiser bits).
# They are replaced by inert stand-ins, never imported; anything else outside torch's tensor set is refused.
# taming's own trainer script is `main` (its callbacks and schedulers may be pickled by reference). Stand-ins are
# never imported or called, so listing a module here cannot run its code.
_TRAINING_MODULES = ("pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "numpy", "pathlib",
                     "argparse", "torch.optim", "torchmetrics", "typing", "datetime", "enum", "taming", "main")


class _Inert:
    """A stand-in for a training object in a checkpoint: keeps its arguments and state, runs nothing."""

    _pickled_as = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<inert {self._pickled_as}>"


def _inert(module: str, name: str) -> type:
    return type(name, (_Inert,), {"_pickled_as": f"{module}.{name}"})


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; training classes become inert; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _get_allowed_globals()
        full = f"{module}.{name}"
        if any(module == m or module.startswith(m + ".") for m in _TRAINING_MODULES):
            return _inert(module, name)
        if full in allowed and admitted(full):  # the scan's list: no bytearray(n), no range(n)
            return allowed[full]
        if full in ("builtins.set", "builtins.frozenset", "_codecs.encode"):
            return {"builtins.set": set, "builtins.frozenset": frozenset, "_codecs.encode": _codecs.encode}[full]
        raise pickle.UnpicklingError(f"global {full!r} is not a tensor, a plain container or a known training "
                                     f"object; loading it could run code")


class _RestrictedPickle:
    """A pickle-module stand-in for torch.load (it calls `Unpickler` and `load`)."""

    __name__ = "viz.vqgan restricted pickle"
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(f: io.IOBase, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def read_ckpt(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a taming `.ckpt` state_dict; no code in the file ever runs (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise VQGANError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        # torch.save has written zip archives since torch 1.6; anything else is damaged or not a checkpoint
        raise VQGANError(f"{path}: not a torch zip checkpoint (truncated, damaged, or a legacy/raw pickle)")
    raw: Any
    scan_torch_file(path, _TRAINING_MODULES, VQGANError)  # globals and declared sizes, before any unpickling
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
        except pickle.UnpicklingError as e:
            raise VQGANError(f"{path}: refused to load: {e}") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AssertionError,
                TypeError) as e:
            raise VQGANError(f"{path}: not a readable torch checkpoint (truncated or damaged?): {e}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AssertionError,
            TypeError) as e:
        raise VQGANError(f"{path}: not a readable torch checkpoint (truncated or damaged?): {e}") from None
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping):
        raise VQGANError(f"{path}: expected a dict with a 'state_dict', got {type(raw).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("loss."):
            continue  # the discriminator and LPIPS of training: not part of the autoencoder
        if not isinstance(value, Tensor):
            raise VQGANError(f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value
    if not any(k.startswith("decoder.") for k in out):
        raise VQGANError(f"{path}: no 'decoder.*' weights in its state_dict (keys start: {', '.join(list(out)[:5])})")
    return out


def read_taming_yaml(path: str | Path) -> VQGANConfig:
    """The VQGANConfig of a taming `.yaml` (model.params.ddconfig, embed_dim, n_embed)."""
    path = Path(path)
    if not path.is_file():
        raise VQGANError(f"{path}: no such config file (taming models come as a .ckpt and a .yaml; give both)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        # The problem and its line only: yaml's message quotes the file's text, which the studio must not echo.
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise VQGANError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{where})") from None
    if not isinstance(data, Mapping):
        raise VQGANError(f"{path}: expected a YAML mapping")
    return VQGANConfig.from_taming(data, str(path))


def _fit(model: VQGAN, state: Mapping[str, Tensor], source: str) -> VQGAN:
    try:
        check_state_dict(model, state, source)
    except CheckpointError as e:
        raise VQGANError(f"{e}\n  (does the yaml belong to these weights? check ddconfig, embed_dim and n_embed)") \
            from None
    model.load_state_dict(dict(state), strict=True)
    return model.eval().requires_grad_(False)


def _infer_quantizer(state: Mapping[str, Tensor], cfg: VQGANConfig) -> VQGANConfig:
    # Gumbel-VQ's yaml names the class in `target`; a yaml without it is still told apart by its keys.
    if "quantize.embed.weight" in state and cfg.quantizer != "gumbel":
        return dataclasses.replace(cfg, quantizer="gumbel")
    return cfg


def load_taming(ckpt: str | Path, yaml_path: str | Path | None = None) -> VQGAN:
    """A taming VQGAN from its .ckpt and .yaml (default: the .yaml beside the .ckpt, same stem), frozen, eval."""
    ckpt = Path(ckpt)
    if yaml_path is None:
        candidates = [ckpt.with_suffix(".yaml"), ckpt.parent / "model.yaml", ckpt.with_name(ckpt.stem + ".yml")]
        yaml_path = next((c for c in candidates if c.is_file()), candidates[0])
    cfg = read_taming_yaml(yaml_path)
    state = read_ckpt(ckpt)
    cfg = _infer_quantizer(state, cfg)
    cfg.name = ckpt.stem
    return _fit(VQGAN(cfg), state, f"{ckpt} (with {Path(yaml_path).name})")


def save_vqgan(model: VQGAN, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write vqgan.safetensors (optionally cast, e.g. fp16) and vqgan.json into folder, atomically."""
    folder = Path(folder)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    save_safetensors(state, folder / WEIGHTS_NAME, metadata={"format": "pt", "layout": "taming-vqgan"})
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(model.config.to_dict(), indent=2) + "\n").encode())
    return folder


def load_vqgan_folder(folder: str | Path) -> VQGAN:
    """A VQGAN from a folder written by save_vqgan (weights cast to float32), frozen, eval."""
    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise VQGANError(f"{folder}: no {CONFIG_NAME} (a VQGAN folder holds {WEIGHTS_NAME} and {CONFIG_NAME})")
    try:
        cfg = VQGANConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VQGANError(f"{cfg_path}: not valid JSON: {e}") from None
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_safetensors(folder / WEIGHTS_NAME).items()}
    return _fit(VQGAN(cfg), state, str(folder / WEIGHTS_NAME))


def load_vqgan(name: str | Path, yaml_path: str | Path | None = None, device: str | torch.device = "cpu") -> VQGAN:
    """A frozen VQGAN from "lite" (the embedded one), a save_vqgan folder, or a taming .ckpt (+ .yaml)."""
    if str(name) == "lite":
        if not (LITE_FOLDER / WEIGHTS_NAME).is_file():
            raise VQGANError(f"the embedded VQGAN is missing from {LITE_FOLDER}; rebuild it with `brivl build-vqgan`")
        model = load_vqgan_folder(LITE_FOLDER)
    else:
        path = Path(name)
        if path.is_dir():
            model = load_vqgan_folder(path)
        elif path.suffix in (".ckpt", ".pt", ".pth"):
            model = load_taming(path, yaml_path)
        elif not path.exists():
            raise VQGANError(f"{path}: no such VQGAN; give 'lite', a folder with {WEIGHTS_NAME} + {CONFIG_NAME}, "
                             f"or a taming .ckpt with its .yaml")
        else:
            raise VQGANError(f"{path}: unknown VQGAN file type (expected a taming .ckpt or a folder)")
    return model.to(device)


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (over the whole batch)."""
    mse = F.mse_loss(a.float(), b.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
