"""Boxes as input: detector boxes as BriVL-1.0 feeds them (padded, masked), the grid otherwise, and the releases."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import brivl
from brivl import config as config_module
from brivl.boxes import load_images_with_boxes, read_release_jsonl, release_caption
from brivl.cli import main
from brivl.config import preset
from brivl.eval.datasets import read_retrieval_set
from brivl.eval.suite import embed_image_files, retrieval
from brivl.inputs import InputError
from brivl.model.brivl import BriVL
from brivl.model.mspp import grid_boxes
from brivl.official import RELEASES, config_from_official

import release_reference  # tests/release_reference.py

H, W = 96, 160  # a non-square image, so x and y scale differently to the model's 128 px
FEW = [[0, 0, 80, 48], [40, 20, 160, 96], [5, 5, 30, 90]]


def _pixels(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _random_boxes(k: int, seed: int, w: int = W, h: int = H) -> list[list[int]]:
    """k detector-like integer boxes inside a w x h image."""
    g = np.random.default_rng(seed)
    xs, ys = np.sort(g.integers(0, w + 1, (k, 2)), axis=1), np.sort(g.integers(0, h + 1, (k, 2)), axis=1)
    return [[int(xs[i, 0]), int(ys[i, 0]), int(xs[i, 1]), int(ys[i, 1])] for i in range(k)]


@torch.no_grad()
def test_given_boxes_change_the_embedding_and_none_means_the_grid(tiny):
    x = _pixels()
    grid = tiny.encode_image(x)
    assert torch.allclose(tiny.encode_image(x, boxes=[None, None]), grid, atol=1e-6)
    boxed = tiny.encode_image(x, boxes=[FEW, torch.tensor([[10.0, 10.0, 50.0, 50.0]])])
    assert boxed.shape == (2, 32) and torch.allclose(boxed.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert (boxed - grid).abs().max().item() > 1e-3
    mixed = tiny.encode_image(x, boxes=[FEW, None])  # one image with boxes, one on the grid
    assert torch.allclose(mixed[0], boxed[0], atol=1e-6) and torch.allclose(mixed[1], grid[1], atol=1e-6)


@torch.no_grad()
def test_the_grid_given_as_boxes_reproduces_the_grid_embedding(tiny):
    # The 36 grid cells written in the pixels of a 160x96 image: scaled to 128 px they are the grid again.
    x = _pixels(1)
    cells = grid_boxes(128, 6)[:36].double() * torch.tensor([W / 128, H / 128, W / 128, H / 128], dtype=torch.float64)
    assert torch.allclose(tiny.encode_image(x, boxes=[cells]), tiny.encode_image(x), atol=1e-6)


@torch.no_grad()
def test_padding_does_not_change_the_embedding(tiny):
    x = _pixels()
    alone = tiny.encode_image(x[:1], boxes=[FEW])  # 3 boxes + the whole image: nothing to pad
    batched = tiny.encode_image(x, boxes=[FEW, _random_boxes(36, 1)])  # padded with 33 zero boxes to 37
    assert (alone[0] - batched[0]).abs().max().item() < 1e-6
    packed, pad = tiny.pack_boxes(x, [FEW, _random_boxes(36, 1)])
    assert packed.shape == (2, 37, 4) and pad.sum(dim=1).tolist() == [33, 0]
    assert packed[0, 3].tolist() == [0, 0, 128, 128] and packed[0, 4:].abs().sum() == 0  # whole image, then zeros
    unmasked = tiny.imgencoder(x, pad_mask=None, boxes=packed)  # the mask is what keeps the zero boxes out
    assert (unmasked[0] - alone[0]).abs().max().item() > 1e-3


@torch.no_grad()
def test_boxes_match_the_release_forward_written_out(tiny):
    per_image = [FEW, _random_boxes(36, 2)]
    x = _pixels()
    ours = tiny.encode_image(x, boxes=per_image)
    boxes, valid = release_reference.release_boxes(per_image, [W, W], [H, H], 128)
    resized = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    ref = release_reference.image_tower(tiny, resized, boxes, valid)
    assert valid.tolist() == [4, 37]
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("boxes, message", [
    ([[[0, 0, 10, 10]] * 37], "image 0 has 37 boxes; at most 36 are allowed (the model adds the whole image"),
    ([[[0, 0, 161, 10]]], "image 0, box 0 [0, 0, 161, 10] lies outside the 160x96 image"),
    ([[[0, 0, 10, 10], [-1, 0, 10, 10]]], "image 0, box 1 [-1, 0, 10, 10] lies outside the 160x96 image"),
    ([[[0, 0, 10, 96.5]]], "lies outside the 160x96 image"),
    ([[[20, 0, 10, 10]]], "box 0 [20, 0, 10, 10] has x2 < x1 or y2 < y1"),
    ([[[0, 0, 10]]], "boxes must have shape (k, 4)"),
    ([[[0, 0, 10, float("nan")]]], "NaN or Inf"),
    ([[[0, 0, 10, 10]], None], "got 2 for 1 image(s)"),
    (torch.zeros(4), "got a tensor of shape (4,)"),
])
def test_bad_boxes_are_refused_with_a_clear_message(tiny, boxes, message):
    with pytest.raises(InputError, match=re.escape(message)):
        tiny.encode_image(_pixels(1), boxes=boxes)


def _png(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _release_line(image_id: str, sur: str, bbox: list) -> str:
    return json.dumps({"image_id": image_id, "sentences": [["alt_text", "alt " + sur], ["sur_text", sur]],
                       "bbox": bbox}, ensure_ascii=False)


@pytest.fixture()
def release_tree(tmp_path, monkeypatch):
    """The release's example layout: data/imgs/*.png, data/jsonls/example.jsonl naming '../data/imgs/...', run
    from evaluation/ (so its paths resolve against the current folder, as the release's scripts do)."""
    a, b = _png(tmp_path / "data/imgs/a.png", H, W, 1), _png(tmp_path / "data/imgs/b.png", 120, 90, 2)
    jsonl = tmp_path / "data/jsonls/example.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("\n".join([_release_line("../data/imgs/a.png", "夕阳下的大海", _random_boxes(40, 3)),
                                _release_line("../data/imgs/b.png", "中国传统寺庙", _random_boxes(5, 4, 90, 120))]),
                     encoding="utf-8")
    (tmp_path / "evaluation").mkdir()
    monkeypatch.chdir(tmp_path / "evaluation")
    return a, b, jsonl


def test_release_jsonl_keeps_the_first_36_boxes_and_reads_sur_text(release_tree):
    a, b, jsonl = release_tree
    rows = read_release_jsonl(jsonl)
    assert [r.image.resolve() for r in rows] == [a.resolve(), b.resolve()]
    assert rows[0].boxes == _random_boxes(40, 3)[:36] and rows[1].boxes == _random_boxes(5, 4, 90, 120)
    assert [release_caption(r) for r in rows] == [["夕阳下的大海"], ["中国传统寺庙"]]


@torch.no_grad()
def test_retrieval_manifest_in_the_release_format_uses_its_boxes(tiny, release_tree):
    a, b, jsonl = release_tree
    data = read_retrieval_set(jsonl)
    assert data.captions == ["夕阳下的大海", "中国传统寺庙"] and data.caption_image == [0, 1]
    assert data.boxes == [_random_boxes(40, 3)[:36], _random_boxes(5, 4, 90, 120)]
    got = embed_image_files(tiny, data.images, boxes=data.boxes)
    pixels, scaled = load_images_with_boxes([a, b], data.boxes, 128, 36)
    assert torch.allclose(got, tiny.encode_image(pixels, boxes=scaled), atol=1e-6)
    assert (got - embed_image_files(tiny, data.images)).abs().max().item() > 1e-3  # not the grid
    res = retrieval(tiny, data)
    assert res["boxes"] == "manifest" and res["n_images"] == 2 and res["n_captions"] == 2


def _err_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"brivl {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_encode_image_with_a_boxes_jsonl(tiny, release_tree, tmp_path, capsys):
    a, b, jsonl = release_tree
    assert main(["encode-image", "tiny", str(a), str(b), "--boxes", str(jsonl), "-o", str(tmp_path / "e.npy")]) == 0
    pixels, scaled = load_images_with_boxes([a, b], [_random_boxes(40, 3)[:36], _random_boxes(5, 4, 90, 120)],
                                            128, 36)
    with torch.no_grad():
        want = tiny.encode_image(pixels, boxes=scaled)
    got = np.load(tmp_path / "e.npy")
    assert got.shape == (2, 32) and np.abs(got - want.numpy()).max() < 1e-6
    assert main(["encode-image", "tiny", str(a), "-o", str(tmp_path / "g.npy")]) == 0
    assert np.abs(np.load(tmp_path / "g.npy")[0] - got[0]).max() > 1e-3  # without --boxes: the grid
    capsys.readouterr()
    outside = tmp_path / "outside.jsonl"
    outside.write_text(_release_line(str(a), "x", [[0, 0, W + 1, H]]))
    assert main(["encode-image", "tiny", str(a), "--boxes", str(outside)]) == 2
    line = _err_line(capsys.readouterr().err, "encode-image")
    assert "a.png, box 0 [0, 0, 161, 96] lies outside the 160x96 image" in line
    assert main(["encode-image", "tiny", str(a), str(b), "--boxes", str(outside)]) == 2
    assert "b.png: no line of" in _err_line(capsys.readouterr().err, "encode-image")


@pytest.mark.parametrize("release, size, boxes", [("brivl-1.0", 380, "detector"), ("brivl-nmi", 456, "grid")])
def test_config_from_a_release_records_its_preset(release, size, boxes):
    with torch.device("meta"):
        state = BriVL(preset("brivl-1.0")).state_dict()  # both releases have this layout: B5, BERT-base, 2048-d
    cfg = config_from_official(state, release)
    assert (cfg.name, cfg.image.image_size, cfg.image.boxes, cfg.embed_dim) == (f"{release}-converted", size,
                                                                                 boxes, 2048)
    assert config_from_official(state).name == "brivl-1.0-converted"  # a B5 checkpoint, no flag: BriVL-1.0


def test_convert_records_each_release_and_info_shows_it(tiny, monkeypatch, tmp_path, capsys):
    # The releases' presets with tiny's towers, so that converting needs no B5-sized file.
    for release, (size, boxes) in {"brivl-1.0": (380, "detector"), "brivl-nmi": (456, "grid")}.items():
        def small(release=release, size=size, boxes=boxes):
            cfg = preset("tiny")
            cfg.name, cfg.image.image_size, cfg.image.boxes = release, size, boxes
            return cfg
        monkeypatch.setitem(config_module.PRESETS, release, small)
    pth = tmp_path / "release.pth"
    torch.save({"learnable": tiny.state_dict()}, pth)
    for release in RELEASES:
        out = tmp_path / release
        assert main(["convert", str(pth), str(out), "--preset", release]) == 0
        saved = json.loads((out / "config.json").read_text())
        assert (saved["name"], saved["image"]["image_size"]) == (f"{release}-converted", {"brivl-1.0": 380,
                                                                                          "brivl-nmi": 456}[release])
        assert saved["image"]["boxes"] == ("detector" if release == "brivl-1.0" else "grid")
        capsys.readouterr()
        assert main(["info", str(out)]) == 0
        rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
        assert rows["release"].startswith(f"{release}: ") and f"{saved['image']['image_size']}px" in rows["image tower"]
    image = _png(tmp_path / "i.png", H, W, 5)
    assert main(["encode-image", str(tmp_path / "brivl-1.0"), str(image)]) == 0
    assert "brivl-1.0-converted was trained on detector boxes; without --boxes" in capsys.readouterr().err
    assert brivl.load(tmp_path / "brivl-nmi").image_size == 456
