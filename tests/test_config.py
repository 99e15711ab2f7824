"""Presets and their JSON form."""
import json

import pytest

from brivl.config import BriVLConfig, ConfigError, preset


def test_presets_carry_the_papers_and_the_releases_numbers():
    r, p = preset("brivl-1.0"), preset("brivl-paper")
    # BriVL-1.0 runs at 380 px (its config said 456 until 2021-09-03, "Fix image size to 380"; issue 16).
    assert (r.image.backbone, r.image.image_size, r.embed_dim, r.queue_size) == ("tf_efficientnet_b5", 380, 2048, 9600)
    assert (p.image.backbone, p.image.image_size, p.embed_dim, p.queue_size) == ("tf_efficientnet_b7", 600, 2560, 13440)
    assert p.text.backbone["hidden_size"] == 1024 and p.text.backbone["num_hidden_layers"] == 24
    for cfg in (r, p):
        assert (cfg.momentum, cfg.temperature) == (0.99, 0.07)
        assert (cfg.image.box_grid, cfg.image.grid_size, cfg.image.num_patches) == (6, 4, 37)
        assert (cfg.image.att_heads, cfg.image.att_layers, cfg.text.att_heads, cfg.text.att_layers) == (4, 4, 4, 4)
        assert cfg.text.max_len == 80


def test_the_two_releases_differ_only_in_image_size_and_boxes():
    one, nmi = preset("brivl-1.0"), preset("brivl-nmi")
    assert (one.image.image_size, one.image.boxes) == (380, "detector")
    assert (nmi.image.image_size, nmi.image.boxes) == (456, "grid")
    a, b = one.to_dict(), nmi.to_dict()
    for d in (a, b):
        del d["name"], d["image"]["image_size"], d["image"]["boxes"]
    assert a == b
    assert nmi.text.backbone_name == "hfl/chinese-roberta-wwm-ext" and nmi.text.backbone["vocab_size"] == 21128


def test_unknown_box_source_is_refused():
    data = preset("tiny").to_dict()
    data["image"]["boxes"] = "selective-search"
    with pytest.raises(ConfigError, match="image.boxes must be one of grid, detector, got 'selective-search'"):
        BriVLConfig.from_dict(data)


def test_json_round_trip(tmp_path):
    cfg = preset("tiny")
    cfg.save(tmp_path)
    assert BriVLConfig.load(tmp_path) == cfg
    assert json.loads((tmp_path / "config.json").read_text())["image"]["mean"] == list(cfg.image.mean)


def test_bad_configs_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'brivl-2'; presets: brivl-1.0, brivl-paper, brivl-lite, tiny"):
        preset("brivl-2")
    data = preset("tiny").to_dict()
    data["image"]["colour"] = 1
    with pytest.raises(ConfigError, match="unknown field.*'image': colour"):
        BriVLConfig.from_dict(data)
    data = preset("tiny").to_dict()
    data["image"]["patch_dim"] = 33
    with pytest.raises(ConfigError, match="not divisible"):
        BriVLConfig.from_dict(data)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BriVLConfig.load(tmp_path)
