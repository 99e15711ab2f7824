"""Progress off a terminal: long commands write whole progress lines to a redirected stderr (brivl.progress)."""
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from brivl import progress

ROOT = Path(__file__).resolve().parents[1]


def _brivl(tmp_path: Path, *argv: str, seconds: str = "0") -> tuple[int, str]:
    """Run the brivl command as a user would, stderr redirected to a file; returns the status and that file's text."""
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "BRIVL_PROGRESS_SECONDS": seconds, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(err, "w") as f:
        code = subprocess.run([sys.executable, "-m", "brivl.cli", *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=f, timeout=600).returncode
    return code, err.read_text(encoding="utf-8")


def test_imagine_writes_progress_lines_to_a_redirected_stderr(tmp_path):
    code, err = _brivl(tmp_path, "imagine", "tiny", "a red apple on a table", "--steps", "12", "--size", "48",
                       "-o", str(tmp_path / "apple.png"))
    assert code == 0, err
    lines = [line for line in err.splitlines() if "%|" in line]
    assert "\r" not in err  # whole lines, readable in a log
    assert len(lines) >= 3, err
    assert lines[0].startswith("text_match('a red apple on a table')") and "0/12" in lines[0]
    assert "100%|" in lines[-1] and "12/12" in lines[-1] and "objective=" in lines[-1]
    assert (tmp_path / "apple.png").is_file()


def test_the_default_interval_still_gives_a_first_and_a_last_line(tmp_path):
    code, err = _brivl(tmp_path, "imagine", "tiny", "a cat", "--steps", "6", "--size", "48", "-o",
                       str(tmp_path / "cat.png"), seconds="5")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "%|" in line]
    assert 2 <= len(lines) <= 4, err  # the start and the end; a 6-step render on tiny is over in a second or two
    assert "0/6" in lines[0] and "6/6" in lines[-1]


def test_phrases_build_reports_progress_in_a_log(tmp_path):
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(f"phrase {i}" for i in range(300)), encoding="utf-8")
    code, err = _brivl(tmp_path, "phrases", "build", "tiny", "--phrases", str(phrases), "--batch-size", "50",
                       "--index", str(tmp_path / "index"))
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("phrase index:")]
    assert len(lines) >= 4 and "300/300" in lines[-1], err


def test_line_stream_turns_refreshes_into_lines():
    out = io.StringIO()
    stream = progress.LineStream(out)
    stream.write("\rstep:  50%|####      | 1/2")
    stream.write("\r")
    stream.write("\n")
    assert out.getvalue() == "step:  50%|####      | 1/2\n"


def test_progress_is_off_unless_asked_or_on_a_terminal(monkeypatch, capsys):
    assert progress.shown(False) is False and progress.shown(True) is True
    # A process that merely imported ipykernel and IPython (as a full test session may) is not a notebook.
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert progress.shown(None) is False  # pytest's captured stderr is no terminal: a library call stays quiet
    with progress.bar(range(3), progress=None, desc="quiet") as bar:
        list(bar)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value, expected", [("2.5", 2.5), ("junk", progress.LINE_SECONDS), ("-1", 0.0)])
def test_line_seconds_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("BRIVL_PROGRESS_SECONDS", value)
    assert progress.line_seconds() == expected


def test_in_a_notebook_without_ipywidgets_the_bar_writes_lines(monkeypatch, capsys):
    shell = type("ZMQInteractiveShell", (), {})()  # what a Jupyter kernel's get_ipython() returns
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed: tqdm could not draw its widget
    assert progress.shown(None) is True
    with progress.bar(range(4), progress=None, desc="in a notebook") as bar:
        assert list(bar) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("in a notebook: 100%|")
