"""The releases' forward passes written out from facts/official-brivl.md, as references for parity tests.

Sequence-first self-attention, the per-image box loop with a conv-then-AvgPool head, a mask built from the
valid lengths: the release's structure, not this package's vectorised one.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from brivl.model.brivl import BriVL


def attention_stack(layers, x: Tensor, pad: Tensor) -> Tensor:
    """Post-norm ReLU encoder layers on [N, L, D] with a key padding mask [N, L] (True: padding), sequence-first."""
    x = x.transpose(0, 1)
    for layer in layers:
        att = layer.self_attn
        a = F.multi_head_attention_forward(
            x, x, x, att.embed_dim, att.num_heads, att.in_proj_weight, att.in_proj_bias, None, None, False, 0.0,
            att.out_proj.weight, att.out_proj.bias, training=False, key_padding_mask=pad, need_weights=False)[0]
        x = layer.norm1(x + a)
        x = layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))
    return x.transpose(0, 1)


def masked_mean_mlp(x: Tensor, keep: Tensor, fc) -> Tensor:
    """Mean over the kept positions, then fc1 -> ReLU -> fc2, then L2-normalised."""
    k = keep.float().unsqueeze(-1)
    mean = (x * k).sum(1) / k.sum(1)
    return F.normalize(fc.fc2(F.relu(fc.fc1(mean))), dim=-1)


def text_tower(model: BriVL, ids: Tensor) -> Tensor:
    """The release's text forward on ids padded with 0: backbone without attention mask, masked SA and mean."""
    enc = model.textencoder
    keep = ids != 0
    hidden = enc.backbone.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    x = attention_stack(enc.learnable["textAtt"].layers, F.normalize(hidden, dim=-1), ~keep)
    return masked_mean_mlp(x, keep, enc.learnable["textFC"])


def image_tower(model: BriVL, pixels: Tensor, boxes: Tensor, valid: Tensor, size: int | None = None) -> Tensor:
    """The release's image forward: pixels at its size (default: the model's), boxes [N, 37, 4] in its pixels,
    valid lengths [N]."""
    enc, g = model.imgencoder, model.config.image.grid_size
    size = size or model.image_size
    x = (pixels - enc.mean) / enc.std
    fmap = enc.backbone.forward_features(x)
    n, c, h, w = fmap.shape
    ratio = size / h
    pooled = []
    for b in range(n):  # one image at a time, every box through affine_grid + grid_sample, then conv + AvgPool
        x1, y1, x2, y2 = (boxes[b] / ratio).unbind(-1)
        zero = torch.zeros_like(x1)
        theta = torch.stack([(x2 - x1) / (w - 1), zero, (x1 + x2 - w + 1) / (w - 1),
                             zero, (y2 - y1) / (h - 1), (y1 + y2 - h + 1) / (h - 1)], dim=1).view(-1, 2, 3)
        grid = F.affine_grid(theta, [boxes.shape[1], c, g, g], align_corners=False)
        sampled = F.grid_sample(fmap[b:b + 1].expand(boxes.shape[1], c, h, w), grid, align_corners=False)
        pooled.append(enc.learnable["max_pool"](sampled).flatten(1))
    keep = torch.arange(boxes.shape[1])[None] < valid[:, None]
    x = attention_stack(enc.learnable["imgAtt"].layers, F.normalize(torch.stack(pooled), dim=-1), ~keep)
    return masked_mean_mlp(x, keep, enc.learnable["imgFC"])


def release_boxes(per_image: list[list[list[float]]], widths: list[int], heights: list[int],
                  size: int) -> tuple[Tensor, Tensor]:
    """BriVL-1.0's box tensor: each image's boxes scaled by (size/width, size/height), the whole image, zero rows
    to 37; and the valid lengths."""
    rows, valid = [], []
    for boxes, w, h in zip(per_image, widths, heights):
        scaled = [[x1 * (size / w), y1 * (size / h), x2 * (size / w), y2 * (size / h)] for x1, y1, x2, y2 in boxes]
        scaled.append([0, 0, size, size])
        valid.append(len(scaled))
        rows.append(scaled + [[0, 0, 0, 0]] * (37 - len(scaled)))
    return torch.tensor(rows, dtype=torch.float64).float(), torch.tensor(valid)
