"""The closed-form image head: the teacher's classifier reproduced by the joint space's class scores."""
import pytest
import torch
import torch.nn.functional as F

from brivl.config import ConfigError
from brivl.hub import load
from recipes.brivl_lite.teacher_init import class_space_map, init_image_head_from_classifier


def _setup(n_classes: int, seed: int = 0):
    model = load("tiny").eval()
    enc = model.imgencoder
    channels = enc.learnable["max_pool"][0].in_channels
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_classes, channels, generator=g)
    bias = torch.randn(n_classes, generator=g)
    classes = F.normalize(torch.randn(n_classes, model.config.embed_dim, generator=g), dim=-1)
    return model, enc, weight, bias, classes, g


def test_scores_reproduce_the_teachers_centred_logits_when_classes_fit_the_space():
    model, enc, weight, bias, classes, g = _setup(n_classes=12)
    init_image_head_from_classifier(enc, weight, bias, classes)
    features = torch.randn(64, weight.shape[1], generator=g)
    # Every box holds the same features: the pooled map the teacher's classifier sees.
    with torch.no_grad():
        z = enc(None, box_means=features[:, None].expand(-1, 37, -1))
    scores = z @ classes.T
    logits = features @ weight.T + bias
    logits = logits - logits.mean(1, keepdim=True)
    # Fewer classes than dimensions: exact up to one positive scale per image.
    ratio = scores / logits
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-3, atol=1e-4)
    assert (ratio[:, 0] > 0).all()
    assert torch.equal(scores.argmax(1), logits.argmax(1))


def test_a_trained_head_loses_that_agreement_and_the_init_restores_it():
    model, enc, weight, bias, classes, g = _setup(n_classes=12, seed=1)
    features = torch.randn(200, weight.shape[1], generator=g)
    boxes = features[:, None].expand(-1, 37, -1)
    teacher_top1 = (features @ weight.T + bias).argmax(1)
    with torch.no_grad():
        before = (enc(None, box_means=boxes) @ classes.T).argmax(1)
        init_image_head_from_classifier(enc, weight, bias, classes)
        after = (enc(None, box_means=boxes) @ classes.T).argmax(1)
    assert (before == teacher_top1).float().mean() < 0.3
    assert (after == teacher_top1).all()


def test_least_squares_map_is_the_best_linear_fit_with_more_classes_than_dimensions():
    g = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(100, 20, generator=g), torch.randn(100, generator=g)
    classes = torch.randn(100, 8, generator=g)
    m, c = class_space_map(weight, bias, classes)
    f = torch.randn(50, 20, generator=g)
    centred = classes - classes.mean(1, keepdim=True)
    target = f @ weight.T + bias
    target = target - target.mean(1, keepdim=True)
    pred = (f @ m.T + c) @ centred.T
    # The map comes at a fixed scale (the tower normalises after it): the best rescaling is the least-squares fit.
    k = (pred * target).sum() / pred.square().sum()
    fit = (k * pred - target).square().sum()
    # Any other map does worse: perturb it and the residual grows.
    other = (f @ (m + 0.01 * m.abs().mean() * torch.randn(m.shape, generator=g)).T + c) @ centred.T
    k2 = (other * target).sum() / other.square().sum()
    assert fit < (k2 * other - target).square().sum()
    assert abs(m.square().mean().sqrt().item() - 0.3) < 1e-4


def test_nearly_collinear_class_embeddings_still_give_a_finite_fp16_map():
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(50, 20, generator=g), torch.randn(50, generator=g)
    classes = torch.randn(1, 8, generator=g) + 1e-6 * torch.randn(50, 8, generator=g)
    m, c = class_space_map(weight, bias, classes)
    assert torch.isfinite(m.half()).all() and torch.isfinite(c.half()).all()


def test_mismatched_shapes_are_refused_by_name():
    model, enc, weight, bias, classes, _ = _setup(n_classes=12)
    with pytest.raises(ConfigError, match="class embeddings"):
        init_image_head_from_classifier(enc, weight, bias, classes[:5])
    with pytest.raises(ConfigError, match="MSPP projection"):
        init_image_head_from_classifier(enc, weight[:, :7], bias, classes)
