"""The visualisation subcommands of `brivl`: imagine, neuron and figures fig2, run in-process on the tiny model."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from brivl.cli import main

FAST = ["--steps", "2", "--size", "64"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(code, err, command):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"brivl {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_imagine_writes_png_of_the_requested_size_and_its_settings(capsys, tmp_path):
    out = tmp_path / "forest.png"
    code, stdout, err = _run(capsys, "imagine", "tiny", "a forest at dawn", "-o", out, "--steps", "3", "--size", "72",
                             "--seed", "5", "--param", "pixel", "--no-decorrelate", "--lr", "0.1")
    assert code == 0, err
    assert str(out) in stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (72, 72) and im.mode == "RGB"
    info = json.loads(out.with_suffix(".json").read_text())
    assert {k: info[k] for k in ("command", "model", "text", "steps", "size", "seed", "param", "decorrelate",
                                 "lr")} == {"command": "imagine", "model": "tiny", "text": "a forest at dawn",
                                            "steps": 3, "size": 72, "seed": 5, "param": "pixel",
                                            "decorrelate": False, "lr": 0.1}
    assert info["time_s"] > 0 and isinstance(info["final_objective"], float)


def test_imagine_is_seeded(capsys, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        assert _run(capsys, "imagine", "tiny", "snow", "-o", path, *FAST)[0] == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("text", ["", "   "])
def test_imagine_empty_prompt_is_exit_2(capsys, tmp_path, text):
    out = tmp_path / "x.png"
    line = _error_line(*_run(capsys, "imagine", "tiny", text, "-o", out, *FAST)[::2], "imagine")
    assert "empty" in line
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], ["--steps", "at least 1"]),
    (["--lr", "0"], ["--lr"]),
    (["--size", "4"], ["--size"]),
    (["-o", "x.jpg"], ["x.jpg", "PNG"]),
])
def test_imagine_bad_settings_are_exit_2(capsys, tmp_path, argv, words):
    code, _, err = _run(capsys, "imagine", "tiny", "forest", *argv)
    line = _error_line(code, err, "imagine")
    for word in words:
        assert word in line


def test_neuron_writes_png_and_settings(capsys, tmp_path):
    out = tmp_path / "n.png"
    code, _, err = _run(capsys, "neuron", "tiny", "--layer", "llp", "--channel", "7", "--text", "forest", "-o", out,
                        *FAST)
    assert code == 0, err
    with Image.open(out) as im:
        assert im.size == (64, 64)
    info = json.loads(out.with_suffix(".json").read_text())
    assert (info["command"], info["layer"], info["channel"], info["text"]) == ("neuron", "llp", 7, "forest")


def test_neuron_channel_out_of_range_is_exit_2(capsys, tmp_path):
    out = tmp_path / "n.png"
    code, _, err = _run(capsys, "neuron", "tiny", "--channel", "678", "--text", "forest", "-o", out, *FAST)
    line = _error_line(code, err, "neuron")
    assert "678" in line and "out of range" in line and "256 channels" in line  # tiny's LLP has 256
    assert not out.exists()
    code, _, err = _run(capsys, "neuron", "tiny", "--channel", "-1", "-o", out, *FAST)
    assert "out of range" in _error_line(code, err, "neuron")


def test_neuron_unknown_layer_is_exit_2(capsys):
    code, _, err = _run(capsys, "neuron", "tiny", "--layer", "nope", "--channel", "1", *FAST)
    line = _error_line(code, err, "neuron")
    assert "nope" in line and "llp" in line


def test_figures_fig2_paper_channels_on_tiny_is_exit_2(capsys, tmp_path):
    # The paper's LLP-456 and LLP-678 do not exist in tiny's 256-channel LLP: a clear error, nothing written.
    code, _, err = _run(capsys, "figures", "fig2", "--model", "tiny", "--out", tmp_path / "f", *FAST)
    line = _error_line(code, err, "figures")
    assert "456" in line and "678" in line and "--channels" in line
    assert not (tmp_path / "f" / "fig2.png").exists()


def test_figures_fig2_missing_model_is_exit_2(capsys, tmp_path):
    code, _, err = _run(capsys, "figures", "fig2", "--model", "no-such-model", "--out", tmp_path)
    assert "no-such-model" in _error_line(code, err, "figures")


def test_figures_fig2_writes_grid_and_json(capsys, tmp_path):
    code, stdout, err = _run(capsys, "figures", "fig2", "--model", "tiny", "--out", tmp_path, "--steps", "1",
                             "--size", "48", "--channels", "1", "2", "3")
    assert code == 0, err
    assert "fig2.png" in stdout
    info = json.loads((tmp_path / "fig2.json").read_text())
    assert info["model"] == "tiny" and info["steps"] == 1 and info["size"] == 48 and info["channels"] == [1, 2, 3]
    assert (tmp_path / "fig2.png").is_file()


def test_brivl_never_imports_viz():
    code = ("import sys, brivl, brivl.cli; from brivl.cli import build_parser; build_parser(); "
            "bad = sorted(m for m in sys.modules if m in ('viz', 'brivl.viz') or m.startswith(('viz.', 'brivl.viz.'))); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
