"""The image tower: timm CNN -> MSPP patches -> self-attention -> masked mean -> MLP -> unit vector."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ImageTowerConfig
from .blocks import MLP, masked_mean, self_attention_block
from .mspp import grid_boxes, make_patch_pool, pool_patches, sample_boxes


class ImageEncoder(nn.Module):
    """Image tower with the release's module names (`backbone`, `learnable.{max_pool,imgAtt,imgFC}`)."""

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        # pretrained=False: weights come from our checkpoints, never from a hub.
        self.backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=cfg.num_classes)
        channels = self.backbone.num_features
        # Identity marker so hooks see exactly the map MSPP pools: the CNN's last layer before pooling.
        self.llp = nn.Identity()
        self.learnable = nn.ModuleDict({
            "max_pool": make_patch_pool(channels, cfg.patch_dim, cfg.grid_size),
            "imgAtt": self_attention_block(cfg.patch_dim, cfg.att_heads, cfg.att_layers, cfg.att_ff_dim, cfg.dropout),
            "imgFC": MLP(cfg.patch_dim, cfg.mlp_hidden or embed_dim, embed_dim),
        })
        self.register_buffer("boxes", grid_boxes(cfg.image_size, cfg.box_grid), persistent=False)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, pixels: Tensor) -> Tensor:
        """Resize [0,1] RGB to the model's size (bilinear, no antialias, differentiable) and normalise."""
        size = self.cfg.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return (pixels - self.mean) / self.std

    def feature_map(self, pixels: Tensor) -> Tensor:
        """The CNN feature map [N, C, h, w] that MSPP pools (passes through the `llp` marker)."""
        return self.llp(self.backbone.forward_features(self.preprocess(pixels)))

    def box_means(self, pixels: Tensor | None = None, feature_map: Tensor | None = None,
                  boxes: Tensor | None = None) -> Tensor:
        """Mean of each box's GRID_SIZE^2 samples of the CNN map [N, P, C]: all MSPP needs of a frozen backbone.

        Pass `feature_map` (from `feature_map(pixels)`) instead of pixels when it is needed for more than MSPP;
        `boxes` [N, P, 4] in input pixels replaces the 37 grid boxes (see brivl.boxes.pack_boxes).
        """
        if feature_map is None:
            feature_map = self.feature_map(pixels)
        boxes = self.boxes if boxes is None else boxes
        samples = sample_boxes(feature_map, boxes, self.cfg.image_size, self.cfg.grid_size)
        return samples.mean(dim=(-1, -2))

    def patches(self, pixels: Tensor | None = None, box_means: Tensor | None = None,
                boxes: Tensor | None = None) -> Tensor:
        """L2-normalised MSPP patch vectors [N, P, patch_dim], from pixels (and boxes) or from cached box_means."""
        if box_means is None:
            box_means = self.box_means(pixels, boxes=boxes)
        return F.normalize(pool_patches(box_means, self.learnable["max_pool"]), dim=-1)

    def attend(self, pixels: Tensor | None = None, pad_mask: Tensor | None = None,
               box_means: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
        """Patch vectors after the self-attention block [N, P, patch_dim] (padded boxes masked out as keys)."""
        return self.learnable["imgAtt"](self.patches(pixels, box_means, boxes), src_key_padding_mask=pad_mask)

    def forward(self, pixels: Tensor | None = None, pad_mask: Tensor | None = None,
                box_means: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
        """Joint-space image embeddings [N, embed_dim], L2-normalised (box_means skips a frozen backbone).

        `boxes` [N, P, 4] in input pixels with `pad_mask` [N, P] (True: padding) replace the grid boxes.
        """
        fused = masked_mean(self.attend(pixels, pad_mask, box_means, boxes), pad_mask)
        return F.normalize(self.learnable["imgFC"](fused), dim=-1)
