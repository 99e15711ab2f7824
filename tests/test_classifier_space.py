"""brivl-lite's classifier space: the closed-form image head reproduces the classifier's ranking; targets are unit."""
import pytest
import torch
import torch.nn.functional as F

from brivl.config import ConfigError
from recipes.brivl_lite.classifier_space import (
    class_targets,
    embed_dim_for,
    image_scale,
    mixed_targets,
    patch_dim_for,
    set_image_head,
)
from brivl.model.image_encoder import ImageEncoder


def test_targets_are_unit_and_rank_like_the_logits():
    torch.manual_seed(0)
    w, b = torch.randn(50, 16) * torch.rand(50, 1) * 3, torch.randn(50) * 0.3
    m = torch.rand(7, 16) * 4
    image = torch.cat([m, torch.ones(7, 1), torch.zeros(7, 1)], 1)
    logits = m @ w.T + b
    for centre, shift in ((False, 0.0), (True, logits.mean(1, keepdim=True))):
        t = class_targets(w, b, centre=centre)
        assert t.shape == (50, 18)
        assert torch.allclose(t.norm(dim=1), torch.ones(50), atol=1e-5)
        # An image vector [m; 1; 0] scores every class by its logit W m + b (less the mean logit when centred),
        # divided by one common factor: the classifier's ranking exactly.
        ratio = (image @ t.T) / (logits - shift)
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-3)
        assert torch.equal((image @ t.T).argsort(1), logits.argsort(1))
    assert (t[:, -1] >= 0).all() and t[:, -1].min() < 1e-2  # the longest row needs no equaliser


def test_mixed_targets_lie_between_the_classes():
    t = F.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    mix = mixed_targets(t, [[2, 5], [3]])
    assert torch.allclose(mix[1], t[3], atol=1e-6)
    # Equally close to both, and as close as the bisector of two unit vectors can be: sqrt((1 + cos) / 2).
    assert torch.allclose((mix[0] @ t[2]), (mix[0] @ t[5]), atol=1e-6)
    assert torch.allclose(mix[0] @ t[2], ((1 + t[2] @ t[5]) / 2).sqrt(), atol=1e-6)


F_TEST = 256  # timm's test_efficientnet: feature channels before its classifier


def _tower(layers: int = 1) -> ImageEncoder:
    from brivl.config import ImageTowerConfig

    cfg = ImageTowerConfig(backbone="test_efficientnet", num_classes=10, image_size=64, patch_dim=patch_dim_for(F_TEST),
                           att_heads=4, att_layers=layers, att_ff_dim=16, dropout=0.0, mlp_hidden=F_TEST + 8)
    torch.manual_seed(0)
    return ImageEncoder(cfg, embed_dim_for(F_TEST)).eval()


def test_image_head_embeds_the_pooled_feature_direction():
    tower = _tower()
    assert tower.backbone.num_features == F_TEST  # the widths above assume timm's test_efficientnet
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        box = tower.box_means(pixels)
        box = box.abs()  # the head assumes non-negative features (ReLU6 maps); test with such
        scale = image_scale(box)
        set_image_head(tower, scale)
        emb = tower(box_means=box)
    # Expected: [mean of the box features; 1; 0], up to a scale; the per-patch normalisation reweights patches by
    # at most a few percent, so compare with the patch-weighted mean the tower's geometry implies.
    x_norm = (box.square().sum(-1) + box.sum(-1).square() + 2 * scale ** 2).sqrt()  # |[f; -sum f; K; -K; 0]|
    m = (box / x_norm[..., None]).mean(1)
    k = (scale / x_norm).mean(1, keepdim=True) / scale
    want = F.normalize(torch.cat([m, k, torch.zeros(3, 1)], 1), dim=-1)
    assert torch.allclose(emb, want, atol=1e-4), (emb - want).abs().max()
    assert emb[:, -1].abs().max() < 1e-6  # no image ever uses the equaliser coordinate
    plain = F.normalize(torch.cat([box.mean(1), torch.ones(3, 1) / 1.0, torch.zeros(3, 1)], 1), dim=-1)
    assert F.cosine_similarity(emb, plain).min() > 0.99  # within a few percent of the plain mean


def test_image_head_refuses_a_wrong_width():
    from brivl.config import ImageTowerConfig

    cfg = ImageTowerConfig(backbone="test_efficientnet", num_classes=10, image_size=64, patch_dim=32, att_heads=2,
                           att_layers=1, att_ff_dim=16, mlp_hidden=F_TEST + 8)
    with pytest.raises(ConfigError, match="patch_dim"):
        set_image_head(ImageEncoder(cfg, embed_dim_for(F_TEST)), 10.0)
    with pytest.raises(ConfigError, match="positive"):
        set_image_head(_tower(), float("nan"))
