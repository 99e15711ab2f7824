"""Checkpoints: save/load bit-for-bit, the official release layout, and damaged or hostile files."""
import json
import pathlib
import pickle

import pytest
import torch

import brivl
from brivl import checkpoint as ckpt
from brivl.checkpoint import CheckpointError
from brivl.config import preset
from brivl.model.brivl import BriVL
from brivl.official import config_from_official, load_official

TEXTS = ["a sunset over the sea", "mountains with forests"]


def _pixels():
    g = torch.Generator().manual_seed(7)
    return torch.rand(2, 3, 128, 128, generator=g)


def _embed(model):
    with torch.no_grad():
        return model.encode_text(TEXTS), model.encode_image(_pixels())


def test_save_then_load_reproduces_embeddings_bit_for_bit(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = brivl.load(tmp_path / "m")
    for a, b in zip(_embed(tiny), _embed(loaded)):
        assert torch.equal(a, b)
    assert brivl.load(tmp_path / "m" / "model.safetensors").config == tiny.config


# Key names and shapes of the released B5 / RoBERTa-base checkpoint (facts/official-brivl.md).
RELEASE_SHAPES = {
    "imgencoder.backbone.conv_head.weight": (2048, 512, 1, 1),
    "imgencoder.backbone.classifier.weight": (1000, 2048),
    "imgencoder.learnable.max_pool.0.weight": (2048, 2048, 1, 1),
    "imgencoder.learnable.max_pool.0.bias": (2048,),
    "imgencoder.learnable.imgAtt.layers.3.self_attn.in_proj_weight": (6144, 2048),
    "imgencoder.learnable.imgAtt.layers.0.linear1.weight": (2048, 2048),
    "imgencoder.learnable.imgAtt.layers.0.norm2.weight": (2048,),
    "imgencoder.learnable.imgFC.fc1.weight": (2048, 2048),
    "imgencoder.learnable.imgFC.fc2.weight": (2048, 2048),
    "textencoder.backbone.bert.embeddings.word_embeddings.weight": (21128, 768),
    "textencoder.backbone.bert.encoder.layer.11.output.dense.weight": (768, 3072),
    "textencoder.backbone.bert.pooler.dense.weight": (768, 768),
    "textencoder.learnable.textAtt.layers.3.self_attn.in_proj_weight": (2304, 768),
    "textencoder.learnable.textFC.fc1.weight": (2048, 768),
    "textencoder.learnable.textFC.fc2.weight": (2048, 2048),
}


def test_release_preset_has_the_release_key_names_and_shapes():
    with torch.device("meta"):
        state = BriVL(preset("brivl-1.0")).state_dict()
    for key, shape in RELEASE_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert "imgencoder.learnable.imgAtt.layers.4.linear1.weight" not in state
    assert "textencoder.backbone.bert.encoder.layer.12.output.dense.weight" not in state
    assert all(k.startswith(("imgencoder.", "textencoder.")) for k in state)
    assert config_from_official(state).to_dict() == {**preset("brivl-1.0").to_dict(),
                                                     "name": "brivl-1.0-converted",
                                                     "text": {**preset("brivl-1.0").to_dict()["text"],
                                                              "use_attention_mask": False, "mlp_hidden": 2048},
                                                     "image": {**preset("brivl-1.0").to_dict()["image"],
                                                               "mlp_hidden": 2048}}


def test_paper_preset_is_b7_roberta_large_2560():
    with torch.device("meta"):
        state = BriVL(preset("brivl-paper")).state_dict()
    assert tuple(state["imgencoder.backbone.conv_head.weight"].shape) == (2560, 640, 1, 1)
    assert tuple(state["textencoder.learnable.textFC.fc1.weight"].shape) == (2560, 1024)
    assert tuple(state["imgencoder.learnable.imgFC.fc2.weight"].shape) == (2560, 2560)
    assert "textencoder.backbone.bert.encoder.layer.23.output.dense.weight" in state


def _official_file(model: BriVL, path: pathlib.Path) -> pathlib.Path:
    """Write `model` the way the release does: one 'learnable' dict with momentum copies, queues outside."""
    learnable = {}
    for key, value in model.state_dict().items():
        learnable[key] = value.clone()
        tower, rest = key.split(".", 1)
        learnable[f"{tower}_mom.{rest}"] = value.clone() + 1.0  # different, so using them would show
    learnable["textencoder.backbone.bert.embeddings.position_ids"] = torch.arange(64)[None]
    learnable["textencoder_mom.backbone.bert.embeddings.position_ids"] = torch.arange(64)[None]
    raw = {"learnable": learnable, "img_queue": torch.randn(32, 64), "text_queue": torch.randn(32, 64),
           "img_queue_ptr": torch.zeros(1, dtype=torch.long), "text_queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save(raw, path)
    return path


@pytest.fixture()
def release_mode_tiny(tiny):
    cfg = preset("tiny")
    cfg.text.use_attention_mask = False  # what the release does, and so what a converted model keeps
    model = BriVL(cfg)
    model.load_state_dict(tiny.state_dict())
    return model.eval()


def test_official_layout_loads_strictly_and_reproduces_embeddings(release_mode_tiny, tmp_path):
    path = _official_file(release_mode_tiny, tmp_path / "BriVL-official.pth")
    loaded = load_official(path, base="tiny")
    assert loaded.config.text.use_attention_mask is False
    for a, b in zip(_embed(release_mode_tiny), _embed(loaded)):
        assert torch.equal(a, b)


def test_convert_cli_writes_a_folder_that_reproduces_the_release(release_mode_tiny, tmp_path):
    from brivl.cli import main

    path = _official_file(release_mode_tiny, tmp_path / "BriVL-official.pth")
    assert main(["convert", str(path), str(tmp_path / "out"), "--preset", "tiny"]) == 0
    converted = brivl.load(tmp_path / "out")
    for a, b in zip(_embed(release_mode_tiny), _embed(converted)):
        assert torch.equal(a, b)


def test_official_state_dict_drops_momentum_queues_and_position_ids(release_mode_tiny, tmp_path):
    raw = torch.load(_official_file(release_mode_tiny, tmp_path / "o.pth"), weights_only=True)
    state = ckpt.official_state_dict(raw)
    assert set(state) == set(release_mode_tiny.state_dict())
    prefixed = ckpt.official_state_dict({"learnable": {f"module.{k}": v for k, v in raw["learnable"].items()}})
    assert set(prefixed) == set(state)


class _Payload:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_with_code_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    zipped, legacy = tmp_path / "evil.pth", tmp_path / "evil-legacy.pth"
    torch.save({"learnable": {"x": _Payload(marker)}}, zipped)
    legacy.write_bytes(pickle.dumps({"learnable": {"x": _Payload(marker)}}, protocol=2))
    assert not marker.exists()
    for path in (zipped, legacy):
        with pytest.raises(CheckpointError, match="refused"):
            load_official(path)
        with pytest.raises(CheckpointError):
            brivl.load(path)
    assert not marker.exists()


def test_truncated_checkpoints_give_clear_errors(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        brivl.load(tmp_path / "m")
    official = tmp_path / "o.pth"
    torch.save({"learnable": tiny.state_dict()}, official)
    official.write_bytes(official.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_official(official, base="tiny")


def test_a_release_saved_as_tar_loads_and_a_tar_archive_says_unpack(release_mode_tiny, tmp_path):
    import tarfile

    # BriVL-1.0 is distributed as BriVL-1.0-5500w.tar: a torch.save file by that name loads like a .pth.
    path = _official_file(release_mode_tiny, tmp_path / "BriVL-1.0-5500w.tar")
    loaded = brivl.load(path, preset="tiny")  # preset: the release (layout) the file follows
    assert loaded.config.name == "tiny-converted"
    for a, b in zip(_embed(release_mode_tiny), _embed(loaded)):
        assert torch.equal(a, b)
    archive = tmp_path / "packed.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(path, arcname="BriVL-1.0-5500w.pth")
    for load in (lambda: load_official(archive, base="tiny"), lambda: brivl.load(archive)):
        with pytest.raises(CheckpointError, match=r"packed.tar: a tar archive of files, not a torch checkpoint: "
                                                  r"unpack it \(tar -xf\)"):
            load()


def test_shape_mismatch_with_config_names_the_keys(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["embed_dim"] = 48
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        brivl.load(tmp_path / "m")
    msg = str(err.value)
    assert "mis-shaped" in msg
    assert "imgencoder.learnable.imgFC.fc2.weight: checkpoint (32, 32) vs model (48, 48)" in msg
    assert "textencoder.learnable.textFC.fc2.bias" in msg


def test_missing_and_unexpected_keys_are_listed_by_name(tiny):
    state = dict(tiny.state_dict())
    del state["textencoder.learnable.textFC.fc1.bias"]
    state["imgencoder.learnable.extra.weight"] = torch.zeros(1)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        ckpt.load_into(tiny, state, "test")
    msg = str(err.value)
    assert "1 missing key(s):\n    textencoder.learnable.textFC.fc1.bias" in msg
    assert "1 unexpected key(s):\n    imgencoder.learnable.extra.weight" in msg
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # model untouched


def test_crash_while_saving_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    tiny.save_pretrained(tmp_path / "m")
    good = (tmp_path / "m" / "model.safetensors").read_bytes()

    def crash(tensors, filename, metadata=None):
        pathlib.Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        tiny.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.undo()
    for a, b in zip(_embed(tiny), _embed(brivl.load(tmp_path / "m"))):
        assert torch.equal(a, b)


def test_unknown_names_and_release_only_presets_explain_themselves(tmp_path):
    from brivl.hub import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not a preset"):
        brivl.load("no-such-model")
    with pytest.raises(ModelNotFoundError, match="brivl convert"):
        brivl.load("brivl-1.0")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        brivl.load(tmp_path / "empty")
