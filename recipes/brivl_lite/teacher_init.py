"""Closed-form start for the image head: the teacher's linear classifier, mapped into the text head's space.

The teacher's logits are l = W f + b on pooled CNN features f. Given the text head's embeddings C [K, d] of
the K class prompts, the embedding e whose scores C e best reproduce the (class-centred) logits is the
least-squares solution e = C^+ (W f + b). That map is linear in f, so it fits the MSPP projection exactly
(every patch is pooled from the same CNN map); the self-attention layers start as identity up to their
LayerNorms (attention and feed-forward outputs zeroed) and the MLP as an exact identity (a bias keeps the
ReLU on its linear side). Measured on brivl-lite's held-out photo views: top-5 agreement with the teacher
71.9% straight from this start, where heads trained on synthetic images alone reached 36% (bench/lite.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from brivl.config import ConfigError

MAP_RMS = 0.3  # RMS of the MSPP projection after the fit: brivl-lite's own fit came out at 0.30


def class_space_map(weight: Tensor, bias: Tensor, class_embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """(M [d, C], c [d]): C_emb (M f + c) fits the class-centred logits W f + b by least squares, up to a scale."""
    if weight.shape[0] != class_embeddings.shape[0]:
        raise ConfigError(f"{weight.shape[0]} classifier rows but {class_embeddings.shape[0]} class embeddings")
    emb = class_embeddings.double()
    # LayerNorm in the attention block removes each vector's mean over dimensions, so solve in that subspace.
    emb = emb - emb.mean(dim=1, keepdim=True)
    pinv = torch.linalg.pinv(emb)  # [d, K]
    w = weight.double() - weight.double().mean(dim=0, keepdim=True)
    b = bias.double() - bias.double().mean()
    m, c = pinv @ w, pinv @ b
    if not (torch.isfinite(m).all() and torch.isfinite(c).all()):
        raise ConfigError("the class embeddings give no finite least-squares map (are they all zero?)")
    # The tower normalises each patch right after this map, so its scale is free: a fixed one keeps fp16
    # exports finite when the class embeddings are nearly collinear (an untrained text head).
    scale = MAP_RMS / m.square().mean().sqrt().clamp_min(1e-30)
    return (m * scale).float(), (c * scale).float()


@torch.no_grad()
def _identity_attention(block: nn.Module) -> None:
    """Zero every layer's attention and feed-forward output so each layer reduces to its LayerNorms."""
    layers = getattr(block, "layers", [])
    for layer in layers:
        nn.init.zeros_(layer.self_attn.out_proj.weight)
        nn.init.zeros_(layer.self_attn.out_proj.bias)
        nn.init.zeros_(layer.linear2.weight)
        nn.init.zeros_(layer.linear2.bias)
        # Smaller hidden activations make each step on the zeroed linear2 small (a sign step of 1e-4 on it cost
        # 16 points of held-out top-5 at full scale); its gradient is smaller too, which suits a path starting at 0.
        layer.linear1.weight.mul_(0.1)
        layer.linear1.bias.mul_(0.1)
        for norm in (layer.norm1, layer.norm2):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


def _identity_mlp(mlp: nn.Module, shift: float, gain: float = 10.0) -> None:
    """fc2(relu(fc1 x)) = gain * x for |x| < shift (the tower normalises after it): needs hidden >= in."""
    d_in, hidden, d_out = mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features
    if hidden < d_in or d_in != d_out:
        raise ConfigError(f"an identity MLP needs hidden >= in == out, got {d_in} -> {hidden} -> {d_out}")
    eye = torch.eye(d_in)
    with torch.no_grad():
        mlp.fc1.weight.zero_()
        mlp.fc1.weight[:d_in] = eye
        mlp.fc1.bias.zero_()
        mlp.fc1.bias[:d_in] = shift
        mlp.fc2.weight.zero_()
        mlp.fc2.weight[:, :d_in] = gain * eye
        mlp.fc2.bias.fill_(-gain * shift)


@torch.no_grad()
def init_image_head_from_classifier(image_encoder: nn.Module, weight: Tensor, bias: Tensor,
                                    class_embeddings: Tensor, mlp_shift: float = 8.0) -> None:
    """Set the image head (MSPP projection, self-attention, MLP) to the teacher's classifier in the text space."""
    conv = image_encoder.learnable["max_pool"][0]
    m, c = class_space_map(weight, bias, class_embeddings)
    if conv.weight.shape[:2] != (m.shape[0], m.shape[1]):
        raise ConfigError(f"MSPP projection is {tuple(conv.weight.shape[:2])}, the classifier map {tuple(m.shape)}")
    conv.weight.copy_(m.view_as(conv.weight))
    conv.bias.copy_(c)
    _identity_attention(image_encoder.learnable["imgAtt"])
    # The MLP's input (a mean of LayerNorm outputs) stayed within +-4.3 on every view of brivl-lite's training
    # cache: a shift of 8 keeps the ReLU linear there, and a small shift keeps later fine-tuning steps gentle
    # (fc2's gradient scales with it: with the shift at 4 sqrt(d) = 78 one Adam step of 1e-3 wrecked the head);
    # the gain (free, as the tower normalises) makes each fc2 weight's step small relative to the weight.
    _identity_mlp(image_encoder.learnable["imgFC"], shift=mlp_shift)
