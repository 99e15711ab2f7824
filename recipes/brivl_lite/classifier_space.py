"""brivl-lite's joint space: the backbone's own classifier space, so a render climbs what the classifier knows.

Image side: the MSPP projection, the self-attention block and the MLP are set in closed form so that an image
embedding is, up to a scale, [m; 1; 0] with m the mean of the 37 MSPP box features of the backbone's
last feature map (1280-d for EfficientNet-Lite0), i.e. the pooled-feature direction plus a constant.

Text side: class k's target is t_k = [W_k - w; b_k - b; z_k] / R, W, b the classifier's weights and bias, w, b
their means over classes, z_k the norm-equalising coordinate that no image uses. Then
cos(image, t_k) = (W_k . m + b_k - w . m - b) / (R |[m; 1]|): the teacher's logit on the MSPP-pooled features
less the mean logit, divided by quantities that do not depend on k, so zero-shot ranks classes as the classifier does (measured on brivl-lite's
held-out photo views: 98% top-1 agreement for the raw MSPP mean, 81% if each patch were normalised and centred as
the tower would do unaided, 86% with unit classifier rows and no equaliser), and a render maximising the cosine
maximises a scale-free classifier logit (issue 15: 8/8 recognisable renders with that objective, 1/8 before).

Why the projection is not a plain identity: the tower L2-normalises each patch and its attention layers centre and
scale each patch (post-norm LayerNorm). The projection maps a box feature f to x = [f; -sum(f); K; -K; 0]: the
coordinates sum to zero, so LayerNorm only scales; and the constant pair (K well above |f|, |sum f|) makes every
patch's norm nearly the same, so normalising each patch only rescales the sum by a near-constant factor (patches are
weighted within 3% of equally) and the constant survives as the bias coordinate.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from brivl.config import ConfigError

EXTRA_PATCH_DIMS = 4  # -sum(f), K, -K, 0 (the zero pads the width to a multiple of 4 heads for 1280 + 4)
EXTRA_EMBED_DIMS = 2  # the bias coordinate and the norm-equaliser
K_OVER_NORM = 5.0  # K as a multiple of the typical |[f; -sum f]|: patch weights then differ by under 3%


def patch_dim_for(feature_dim: int) -> int:
    """The MSPP width the closed-form image head needs over a backbone of `feature_dim` channels."""
    return feature_dim + EXTRA_PATCH_DIMS


def embed_dim_for(feature_dim: int) -> int:
    """The joint width: the classifier's features, its bias and the norm-equaliser."""
    return feature_dim + EXTRA_EMBED_DIMS


def class_targets(weight: Tensor, bias: Tensor, centre: bool = True) -> Tensor:
    """Unit text targets [C, F + 2] = [W_k - w; b_k - b; z_k] / R with one norm R for every class.

    `centre` subtracts the mean classifier row w and mean bias b: every class's score drops by the same w.m + b,
    so zero-shot ranks exactly as before, but a render no longer gains by climbing what all classes share (the
    generic ImageNet texture that made every prompt look alike).
    """
    w, b = weight.double(), bias.double()
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ConfigError(f"classifier weight {tuple(w.shape)} and bias {tuple(b.shape)} do not fit")
    if centre:
        w, b = w - w.mean(0, keepdim=True), b - b.mean()
    sq = w.square().sum(1) + b.square()
    radius = sq.max().sqrt() * (1 + 1e-6)
    z = (radius.square() - sq).clamp_min(0).sqrt()
    return (torch.cat([w, b[:, None], z[:, None]], dim=1) / radius).float()


def mixed_targets(targets: Tensor, classes: list[list[int]]) -> Tensor:
    """The unit mean of the targets of each list of classes [n, F + 2] (a text naming two things lies between)."""
    rows = [targets[c].sum(0) for c in classes]
    return nn.functional.normalize(torch.stack(rows), dim=-1)


def image_scale(box_means: Tensor) -> float:
    """The constant K for box features like these [..., F]: K_OVER_NORM times their mean |[f; -sum f]|."""
    f = box_means.reshape(-1, box_means.shape[-1]).double()
    norm = (f.square().sum(-1) + f.sum(-1).square()).sqrt()
    return float(K_OVER_NORM * norm.mean())  # a mean: boxes past a small map's edge sample zeros


@torch.no_grad()
def _identity_attention(block: nn.Module) -> None:
    """Zero each layer's attention and feed-forward outputs: the layer reduces to its LayerNorms, a pure scaling here."""
    for layer in getattr(block, "layers", []):
        for lin in (layer.self_attn.out_proj, layer.linear2):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for norm in (layer.norm1, layer.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


@torch.no_grad()
def set_image_head(image_encoder: nn.Module, scale: float) -> None:
    """Closed-form image head: embedding direction [m; 1; 0] for MSPP box-feature mean m (see the module doc)."""
    conv = image_encoder.learnable["max_pool"][0]
    mlp = image_encoder.learnable["imgFC"]
    d_in, d_patch = conv.weight.shape[1], conv.weight.shape[0]
    if d_patch != patch_dim_for(d_in):
        raise ConfigError(f"image.patch_dim must be {patch_dim_for(d_in)} over {d_in} channels, got {d_patch}")
    if mlp.fc2.out_features != embed_dim_for(d_in) or mlp.fc1.out_features < d_in + 1:
        raise ConfigError(f"the image MLP must map to {embed_dim_for(d_in)} through >= {d_in + 1} hidden units, "
                          f"got {mlp.fc1.out_features} -> {mlp.fc2.out_features}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"the image head's constant must be positive and finite, got {scale}")
    w = torch.zeros(d_patch, d_in)
    w[:d_in] = torch.eye(d_in)
    w[d_in] = -1.0
    bias = torch.zeros(d_patch)
    bias[d_in + 1], bias[d_in + 2] = scale, -scale
    conv.weight.copy_(w.view_as(conv.weight))
    conv.bias.copy_(bias)
    _identity_attention(image_encoder.learnable["imgAtt"])
    # fc1 keeps m and the K coordinate, fc2 writes m and K/K = 1. Every kept entry is >= 0 (ReLU6 features, K > 0),
    # so a shift of 1 keeps the ReLU linear even for silent channels (a render needs their gradient); 1 and the gain
    # of 1 are exact in fp16, so the shift cancels exactly in an fp16 export.
    shift = 1.0
    mlp.fc1.weight.zero_()
    mlp.fc1.weight[:d_in, :d_in] = torch.eye(d_in)
    mlp.fc1.weight[d_in, d_in + 1] = 1.0
    mlp.fc1.bias.zero_()
    mlp.fc1.bias[:d_in + 1] = shift
    mlp.fc2.weight.zero_()
    mlp.fc2.weight[:d_in, :d_in] = torch.eye(d_in)
    mlp.fc2.weight[d_in, d_in] = 1.0 / scale
    mlp.fc2.bias.zero_()
    mlp.fc2.bias[:d_in] = -shift
    mlp.fc2.bias[d_in] = -shift / scale
