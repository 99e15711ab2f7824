"""Distillation of a teacher classifier into image-to-label-prompt similarities, on top of MoCo.

The distillation is the brivl-lite recipe's extra loss term (recipes.brivl_lite.distill.Distill), which training
takes from outside (brivl.train.LossTerm)."""
import math

import pytest
import torch
import torch.nn.functional as F

import brivl
from brivl.config import ConfigError
from brivl.data import Augment, PairDataset, read_pairs
from brivl.feature_cache import FeatureCacheDataset, build_feature_cache
from brivl.toydata import make_toy_pairs
from brivl.train import TrainConfig, train
from recipes.brivl_lite.distill import Distill, distill_loss, sample_label_classes

FROZEN = {"cnn_blocks": [], "text_layers": 0, "fix_bn": True}
LABELS = [["red", "a red thing"], ["green", "a green thing"], ["blue", "a blue thing"], ["grey", "a grey thing"]]


def map_teacher(feature_map: torch.Tensor) -> torch.Tensor:
    """A stand-in classifier head on the image tower's CNN map: logits from the mean of its first 4 channels."""
    return 8 * feature_map[:, :4].mean(dim=(2, 3))


def test_distill_loss_is_the_kl_divergence_by_hand():
    g = torch.Generator().manual_seed(0)
    z_img = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    z_lab = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    teacher = torch.randn(3, 5, generator=g) * 3
    got = distill_loss(z_img, z_lab, teacher, temperature=0.1, teacher_temperature=2.0)
    want = 0.0
    for i in range(3):
        p = torch.softmax(teacher[i] / 2.0, 0)
        q = torch.softmax(z_img[i] @ z_lab.T / 0.1, 0)
        want += float((p * (p.log() - q.log())).sum())
    assert math.isclose(got.item(), want / 3, rel_tol=1e-5)
    # Zero when the student's distribution is the teacher's.
    same = distill_loss(z_img, z_lab, z_img @ z_lab.T / 0.1, temperature=0.1)
    assert abs(same.item()) < 1e-6


def test_label_classes_start_with_each_rows_top_teacher_classes():
    logits = torch.full((2, 10), -5.0)
    logits[0, 7], logits[0, 2], logits[1, 4] = 9.0, 8.0, 9.0
    torch.manual_seed(0)
    chosen = sample_label_classes(logits, k=6, top=2)
    assert len(chosen) == 6 and len(set(chosen.tolist())) == 6
    assert chosen[:3].tolist() == [7, 4, 2]  # the top-1 of every row first, then the runners-up
    assert sample_label_classes(logits, k=10, top=2).sort().values.tolist() == list(range(10))


@pytest.fixture(scope="module")
def taught_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    manifest = make_toy_pairs(root / "toy", 48, size=64, seed=5)
    model = brivl.load("tiny")
    folder = build_feature_cache(model, manifest, root / "cache", views=2, batch_size=16, progress=False,
                                 augment=Augment(crop_scale=(0.5, 1.0)), teacher=map_teacher, labels=LABELS)
    return manifest, folder


@pytest.mark.slow
def test_cache_stores_teacher_logits_of_each_view_and_label_prompts(taught_cache):
    manifest, folder = taught_cache
    model = brivl.load("tiny")
    ds = FeatureCacheDataset(folder, model)
    assert ds.teacher_logits.shape == (48, 2, 4) and ds.label_shape == [4, 2]
    live = PairDataset(read_pairs(manifest), model.image_size, Augment(crop_scale=(0.5, 1.0)), seed=0)
    pixels, _ = live.get(7, 1)
    with torch.no_grad():
        want_logits = map_teacher(model.imgencoder.feature_map(pixels[None]))[0]
    assert torch.allclose(ds.teacher_logits[7, 1].float(), want_logits, atol=2e-2, rtol=1e-2)  # stored as fp16
    hidden, mask = ds.labels(torch.tensor([2, 0]), torch.tensor([1, 0]))
    with torch.no_grad():
        tok = model.tokenize(["a blue thing", "red"])
        want = model.textencoder.hidden_states(**tok)
    assert torch.equal(mask, tok["attention_mask"])
    assert torch.allclose(hidden, want * mask[..., None], atol=2e-3, rtol=1e-2)


@pytest.mark.slow
def test_distillation_pulls_the_student_towards_the_teacher(taught_cache, tmp_path):
    _, folder = taught_cache
    base = dict(data=str(folder), model="tiny", batch_size=8, queue_size=16, lr=2e-3, steps=30, save_every=30,
                freeze=FROZEN, augment=False)
    rows = []
    train(TrainConfig.from_dict({**base, "output": str(tmp_path / "kd")}), progress=False, callback=rows.append,
          extra_losses=[Distill.from_dict({"weight": 1.0, "classes": 4})])
    assert all("loss_distill" in r for r in rows)
    first = sum(r["loss_distill"] for r in rows[:5]) / 5
    last = sum(r["loss_distill"] for r in rows[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    # Without the term nothing is logged for it, and a cache without teacher logits is refused.
    plain = train(TrainConfig.from_dict({**base, "steps": 2, "output": str(tmp_path / "plain")}), progress=False)
    assert "loss_distill" not in plain


@pytest.mark.slow
def test_distillation_needs_a_cache_with_a_teacher(tmp_path):
    manifest = make_toy_pairs(tmp_path / "toy", 16, size=64, seed=1)
    folder = build_feature_cache(brivl.load("tiny"), manifest, tmp_path / "cache", views=1, progress=False)
    cfg = TrainConfig.from_dict(dict(data=str(folder), model="tiny", batch_size=8, queue_size=16, steps=1,
                                     output=str(tmp_path / "run"), freeze=FROZEN))
    with pytest.raises(ConfigError, match="teacher logits"):
        train(cfg, progress=False, extra_losses=[Distill.from_dict({"weight": 1.0})])
    with pytest.raises(ConfigError, match="unknown distill option"):
        Distill.from_dict({"wieght": 1.0})
    with pytest.raises(ConfigError, match="unknown training option"):  # training itself knows no distillation
        TrainConfig.from_dict(dict(data="x", distill={"weight": 1.0}))


def test_crop_augmentation_is_seeded_and_keeps_the_size():
    img = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    aug = Augment(crop_scale=(0.3, 0.6), jitter_p=0.0, grayscale_p=0.0)
    a = aug(img, torch.Generator().manual_seed(1))
    b = aug(img, torch.Generator().manual_seed(1))
    c = aug(img, torch.Generator().manual_seed(2))
    assert a.shape == img.shape and torch.equal(a, b) and not torch.equal(a, c)
