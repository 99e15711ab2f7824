"""Cached frozen-backbone outputs: equal to the live computation, trainable, resumable, tied to the model."""
import json

import pytest
import torch

import brivl
from brivl.data import DataError, PairDataset, Augment, read_pairs
from brivl.feature_cache import FeatureCacheDataset, build_feature_cache, is_feature_cache
from brivl.toydata import make_toy_pairs
from brivl.train import TrainConfig, train

pytestmark = pytest.mark.slow
FROZEN = {"cnn_blocks": [], "text_layers": 0, "fix_bn": True}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    manifest = make_toy_pairs(root / "toy", 40, size=64, seed=3)
    model = brivl.load("tiny")
    return manifest, build_feature_cache(model, manifest, root / "cache", views=2, batch_size=16, progress=False)


def test_cache_holds_what_the_frozen_backbones_compute(cached):
    manifest, folder = cached
    assert is_feature_cache(folder)
    model = brivl.load("tiny")
    ds = FeatureCacheDataset(folder, model)
    pairs = read_pairs(manifest)
    live = PairDataset(pairs, model.image_size, Augment(), seed=0)
    for index, view in [(0, 0), (7, 1), (39, 1)]:
        pixels, text = live.get(index, view)
        means, hidden = ds.get(index, view)
        with torch.no_grad():
            want = model.imgencoder.box_means(pixels[None])[0]
            tok = model.tokenize([text])
            want_hidden = model.textencoder.hidden_states(**tok)[0]
        assert means.shape == (37, 256) and torch.allclose(means, want, atol=2e-3, rtol=1e-2)
        assert torch.allclose(hidden, want_hidden, atol=2e-3, rtol=1e-2)
    assert not torch.equal(ds.get(3, 0)[0], ds.get(3, 1)[0])  # two augmented views
    assert torch.equal(ds.get(3, 0)[0], ds.get(3, 2)[0])  # epoch 2 is view 0 again


def test_building_resumes_shard_by_shard(cached, tmp_path):
    manifest, folder = cached
    model = brivl.load("tiny")
    shard = folder / "images-00000.safetensors"
    before = shard.read_bytes()
    shard.unlink()
    build_feature_cache(model, manifest, folder, views=2, batch_size=16, progress=False)
    assert shard.read_bytes() == before


def test_training_on_the_cache_learns_and_resumes_exactly(cached, tmp_path):
    _, folder = cached
    cfg = dict(data=str(folder), model="tiny", batch_size=8, queue_size=16, lr=1e-3, save_every=4, freeze=FROZEN)
    full = train(TrainConfig.from_dict({**cfg, "output": str(tmp_path / "a"), "steps": 8}), progress=False)
    train(TrainConfig.from_dict({**cfg, "output": str(tmp_path / "b"), "steps": 4}), progress=False)
    resumed = train(TrainConfig.from_dict({**cfg, "output": str(tmp_path / "b"), "steps": 8}), resume=True,
                    progress=False)
    assert abs(full["loss"] - resumed["loss"]) <= 1e-6
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_a_cache_for_other_settings_is_refused(cached):
    _, folder = cached
    cfg = brivl.preset("tiny")
    cfg.image.grid_size = 6
    from brivl.model.brivl import BriVL

    with pytest.raises(DataError, match="rebuild it for this model"):
        FeatureCacheDataset(folder, BriVL(cfg))
