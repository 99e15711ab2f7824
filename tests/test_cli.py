"""The `brivl` command, run in-process through brivl.cli.main (plus one run of the real console script)."""
from __future__ import annotations

import io
import json
import pathlib
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

import brivl
from brivl.cli import main
from brivl.images import load_images


@pytest.fixture(scope="module")
def model():
    return brivl.load("tiny")


@pytest.fixture
def images(tmp_path):
    """Two small PNGs of different sizes and content."""
    paths = []
    for i, (h, w) in enumerate([(60, 90), (128, 100)]):
        array = np.random.default_rng(10 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_error(code: int, err: str, command: str, *words: str) -> str:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith(f"brivl {command}: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- info -----------------------------------------------------------------------------------------

def test_info_tiny(capsys):
    code, out, err = _run(capsys, "info", "tiny")
    assert code == 0
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert rows["model"] == "tiny"
    assert rows["joint dim"] == "32"
    assert "37 MSPP patches" in rows["image tower"] and "128px" in rows["image tower"]
    assert "max 32 tokens" in rows["text tower"]
    assert rows["feature layers"].split(", ")[0] == "llp"
    assert "block0" in rows["feature layers"]


def test_console_script_info_tiny(tmp_path):
    script = Path(sys.executable).parent / "brivl"
    assert script.is_file(), f"console script not installed at {script}"
    result = subprocess.run([str(script), "info", "tiny"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tiny" in result.stdout
    assert "37 MSPP patches" in result.stdout


# --- encode-text ----------------------------------------------------------------------------------

def test_encode_text_to_npy(capsys, tmp_path, model):
    out = tmp_path / "out.npy"
    code, stdout, err = _run(capsys, "encode-text", "tiny", "a cat", "a dog", "-o", out)
    assert code == 0, err
    assert "saved 2 x 32 embeddings" in err
    emb = np.load(out)
    assert emb.shape == (2, 32)
    assert emb.dtype == np.float32
    expected = model.encode_text(["a cat", "a dog"]).detach()
    assert torch.allclose(torch.from_numpy(emb), expected, atol=1e-6)
    assert stdout == ""


def test_encode_text_to_json(capsys, tmp_path, model):
    out = tmp_path / "out.json"
    code, _, err = _run(capsys, "encode-text", "tiny", "a cat", "a dog", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert set(data) == {"labels", "embeddings"}
    assert data["labels"] == ["a cat", "a dog"]
    emb = torch.tensor(data["embeddings"], dtype=torch.float32)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb, model.encode_text(["a cat", "a dog"]).detach(), atol=1e-6)


def test_encode_text_to_safetensors(capsys, tmp_path, model):
    out = tmp_path / "out.safetensors"
    code, _, err = _run(capsys, "encode-text", "tiny", "a cat", "a dog", "-o", out)
    assert code == 0, err
    tensors = load_file(str(out))
    assert list(tensors) == ["embeddings"]
    emb = torch.from_numpy(tensors["embeddings"])
    assert emb.shape == (2, 32)
    assert torch.allclose(emb, model.encode_text(["a cat", "a dog"]).detach(), atol=1e-6)
    with safe_open(str(out), framework="np") as f:
        assert json.loads(f.metadata()["labels"]) == ["a cat", "a dog"]


def test_encode_text_prints_without_output(capsys, model):
    code, out, err = _run(capsys, "encode-text", "tiny", "a cat")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    label, norm, head = lines[0].split("\t")
    assert label == "a cat"
    assert norm == "|z|=1.0000"
    values = [float(v) for v in head.strip("[] .").split()]
    assert len(values) == 8
    expected = model.encode_text(["a cat"])[0, :8].tolist()
    assert values == pytest.approx(expected, abs=6e-5)
    assert head.endswith(" ...]")


def test_encode_text_reads_stdin(capsys, monkeypatch, tmp_path, model):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a cat\n\nthe sea\n"))
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-text", "tiny", "-", "-o", out)
    assert code == 0, err
    emb = np.load(out)
    assert emb.shape == (2, 32)
    expected = model.encode_text(["a cat", "the sea"]).detach()
    assert torch.allclose(torch.from_numpy(emb), expected, atol=1e-6)


def test_encode_text_warns_about_truncation_on_stderr(capsys, tmp_path):
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-text", "tiny", "word " * 100, "-o", out)
    assert code == 0, err
    assert "brivl: warning:" in err and "truncated" in err
    assert np.load(out).shape == (1, 32)


# --- encode-image and similarity ------------------------------------------------------------------

def test_encode_image_to_npy(capsys, tmp_path, images, model):
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-image", "tiny", *images, "-o", out)
    assert code == 0, err
    emb = np.load(out)
    assert emb.shape == (2, 32)
    expected = model.encode_image(load_images(images, 128)).detach()
    assert torch.allclose(torch.from_numpy(emb), expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_encode_image_single_file(capsys, tmp_path, images, model):
    out = tmp_path / "one.npy"
    code, _, err = _run(capsys, "encode-image", "tiny", images[0], "-o", out)
    assert code == 0, err
    expected = model.encode_image(load_images([images[0]], 128)).detach()
    assert torch.allclose(torch.from_numpy(np.load(out)), expected, atol=1e-6)


def test_similarity_table(capsys, images, model):
    texts = ["a cat", "the sea"]
    code, out, err = _run(capsys, "similarity", "tiny", "--text", *texts, "--image", *images)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "cosine similarity (tiny, 32-d)"
    assert lines[1].split() == ["[0]", "[1]", "best"]
    table, best = {}, {}
    for line in lines[2:4]:
        name, *values, top = line.split()
        table[name], best[name] = [float(v) for v in values], top
    assert list(table) == [p.name for p in images]
    assert lines[4].startswith("which text fits each image: softmax over the texts of cosine / 0.07")
    probs = {line.split()[0]: [float(v.rstrip("%")) / 100 for v in line.split()[1:]] for line in lines[6:8]}
    assert lines[8:] == ["[0] a cat", "[1] the sea"]
    got = torch.tensor([table[p.name] for p in images])
    assert got.shape == (2, 2)
    expected = (model.encode_image(load_images(images, 128)) @ model.encode_text(texts).T).detach()
    assert torch.allclose(got, expected, atol=1e-3)
    assert [best[p.name] for p in images] == [f"[{j}]" for j in expected.argmax(1).tolist()]
    want = torch.softmax(expected / 0.07, dim=1)
    assert torch.allclose(torch.tensor([probs[p.name] for p in images]), want, atol=2e-3)


# --- errors: exit status 2, one line on stderr, nothing saved -------------------------------------

def test_empty_text_is_an_error(capsys, tmp_path):
    out = tmp_path / "out.npy"
    code, stdout, err = _run(capsys, "encode-text", "tiny", "a cat", "", "-o", out)
    _assert_error(code, err, "encode-text", "text 1", "empty")
    assert not out.exists()
    assert stdout == ""


def test_non_image_file_is_an_error(capsys, tmp_path, images):
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-image", "tiny", images[0], fake, "-o", out)
    _assert_error(code, err, "encode-image", "fake.png", "not an image")
    assert not out.exists()


def test_missing_image_file_is_an_error(capsys, tmp_path):
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-image", "tiny", tmp_path / "missing.jpg", "-o", out)
    _assert_error(code, err, "encode-image", "missing.jpg", "no such file")
    assert not out.exists()


def test_similarity_with_bad_image_is_an_error(capsys, tmp_path):
    code, out, err = _run(capsys, "similarity", "tiny", "--text", "a", "--image", tmp_path / "nope.png")
    _assert_error(code, err, "similarity", "no such file")
    assert out == ""


def test_unknown_model_is_an_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.npy"
    code, _, err = _run(capsys, "encode-text", "no-such-model", "a cat", "-o", out)
    _assert_error(code, err, "encode-text", "no-such-model", "tiny")
    assert not out.exists()
    code, _, err = _run(capsys, "info", "no-such-model")
    _assert_error(code, err, "info", "no model 'no-such-model'")


def test_layout_without_weights_says_convert(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so no folder named brivl-1.0 can be picked up
    code, out, err = _run(capsys, "info", "brivl-1.0")
    _assert_error(code, err, "info", "brivl-1.0", "convert")
    assert out == ""


def test_unknown_output_suffix_is_an_error(capsys, tmp_path):
    folder = tmp_path / "outdir"
    folder.mkdir()
    out = folder / "out.xyz"
    code, _, err = _run(capsys, "encode-text", "tiny", "a cat", "-o", out)
    _assert_error(code, err, "encode-text", "out.xyz", "unknown output format", ".npy")
    assert not out.exists()
    assert list(folder.iterdir()) == []  # no temporary file left behind either


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["encode-text", "tiny"])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


class _Evil:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_convert_refuses_a_code_executing_pickle(capsys, tmp_path):
    # The payload is real: plain unpickling runs it.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Evil(control)))
    assert control.exists()

    marker = tmp_path / "pwned-marker"
    ckpt = tmp_path / "evil.pth"
    torch.save({"learnable": {"imgencoder.x": _Evil(marker)}}, ckpt)
    assert not marker.exists()
    out_dir = tmp_path / "converted"
    code, stdout, err = _run(capsys, "convert", ckpt, out_dir)
    _assert_error(code, err, "convert", "evil.pth", "refused")
    assert not marker.exists()
    assert not (out_dir / "model.safetensors").exists()
    assert stdout == ""


def test_convert_refuses_a_file_that_is_not_a_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "garbage.pth"
    ckpt.write_bytes(b"\x00\x01garbage" * 50)
    out_dir = tmp_path / "converted"
    code, _, err = _run(capsys, "convert", ckpt, out_dir)
    _assert_error(code, err, "convert", "garbage.pth")
    assert not (out_dir / "model.safetensors").exists()
