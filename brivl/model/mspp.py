"""Multi-scale patch pooling (MSPP): 36 grid boxes plus the whole image, pooled from a CNN feature map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grid_boxes(image_size: int, box_grid: int = 6) -> Tensor:
    """The MSPP boxes [x0, y0, x1, y1] in input pixels: a box_grid^2 grid (outer loop over x), then the whole image."""
    s = image_size / box_grid
    boxes = [[i * s, j * s, (i + 1) * s, (j + 1) * s] for i in range(box_grid) for j in range(box_grid)]
    boxes.append([0.0, 0.0, float(image_size), float(image_size)])
    return torch.tensor(boxes, dtype=torch.float32)


def box_thetas(boxes: Tensor, height: int, width: int) -> Tensor:
    """Affine matrices [P, 2, 3] that map a sampling grid onto each box of a height x width map.

    Box coordinates are in feature-map pixels. The release normalises with (size - 1) and then samples
    with align_corners=False; that mix is kept on purpose, for parity with released checkpoints.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    wd, hd = max(width - 1, 1), max(height - 1, 1)
    zero = torch.zeros_like(x0)
    row_x = torch.stack([(x1 - x0) / wd, zero, (x0 + x1 - width + 1) / wd], -1)
    row_y = torch.stack([zero, (y1 - y0) / hd, (y0 + y1 - height + 1) / hd], -1)
    return torch.stack([row_x, row_y], -2)


def sample_boxes(fmap: Tensor, boxes: Tensor, image_size: int, grid_size: int) -> Tensor:
    """Bilinear samples of each box: [N, C, h, w] map, boxes in input pixels -> [N, P, C, g, g].

    `boxes` is [P, 4] (the same boxes for every image) or [N, P, 4] (each image its own, e.g. detector boxes).
    """
    n, c, h, w = fmap.shape
    per_image = boxes.dim() == 3
    boxes = boxes if per_image else boxes[None]  # [B, P, 4], B = N or 1
    b, p = boxes.shape[:2]
    scale = boxes.new_tensor([w / image_size, h / image_size, w / image_size, h / image_size])
    theta = box_thetas(boxes.reshape(-1, 4).to(fmap.device) * scale.to(fmap.device), h, w).to(fmap.dtype)
    grid = F.affine_grid(theta, [b * p, 1, grid_size, grid_size], align_corners=False)  # [B*P, g, g, 2]
    # One grid_sample call over all boxes: the P grids are laid side by side along the width.
    wide = grid.view(b, p, grid_size, grid_size, 2).permute(0, 2, 1, 3, 4).reshape(b, grid_size, p * grid_size, 2)
    if not per_image:
        wide = wide.expand(n, -1, -1, -1)
    sampled = F.grid_sample(fmap, wide, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(n, c, grid_size, p, grid_size).permute(0, 3, 1, 2, 4)


def make_patch_pool(in_channels: int, out_channels: int, grid_size: int) -> nn.Sequential:
    """The release's `max_pool` head: a 1x1 conv then AvgPool2d(grid_size, stride=1) over each box's samples."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.AvgPool2d(grid_size, stride=1))


def pool_patches(box_means: Tensor, pool: nn.Sequential) -> Tensor:
    """Patch vectors [N, P, D] from the mean of each box's samples [N, P, C], with the `max_pool` head.

    Averaging first and then applying the 1x1 conv equals the release's conv-then-AvgPool (both are
    linear) and costs g*g times fewer multiply-adds; tests check the two agree.
    """
    conv = pool[0]
    return F.linear(box_means, conv.weight.flatten(1), conv.bias)
