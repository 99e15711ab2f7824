"""`brivl --help` and `brivl info` start without torch: lazy packages, parser-only CLI modules, stored descriptions.

Start-up time itself is measured by bench/startup.py (a ratio); these tests check what makes it short: which
modules a command loads, and that a stored description says exactly what building the model says.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import brivl
from brivl import describe
from brivl.cli import build_parser, command_function

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "transformers", "kornia", "gradio")


def _run(code: str, tmp_path: Path) -> dict:
    """Run code in a fresh interpreter (cache in tmp_path); it prints a JSON dict last."""
    env = {**os.environ, "BRIVL_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded_heavy() -> str:
    return f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def test_help_and_every_floor_parser_load_no_torch(tmp_path):
    code = ("import contextlib, io, json, sys\nfrom brivl.cli import build_parser, main\n"
            "p = build_parser(floors=True)\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "sub = [a for a in p._actions if a.dest == 'command'][0]\n"
            f"print(json.dumps({{'heavy': {_loaded_heavy()}, 'commands': sorted(sub.choices), "
            "'help': out.getvalue()}))")
    result = _run(code, tmp_path)
    assert result["heavy"] == []
    assert {"info", "imagine", "figures", "phrases", "build-default", "studio", "compare"} <= set(result["commands"])
    assert "imagine" in result["help"] and "build-default" in result["help"]


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subcommands(sub)


def test_every_subcommand_names_a_function_that_exists():
    targets = {name: sub.get_default("run") for name, sub in _subcommands(build_parser(floors=True))}
    assert len(targets) >= 20
    for name, target in targets.items():
        if target is None:  # a group whose subcommands carry the target (phrases build/query)
            continue
        assert isinstance(target, str) and ":" in target, (name, target)
        assert callable(command_function(target)), (name, target)


def test_lazy_packages_give_functions_not_same_named_modules():
    from brivl import viz
    from brivl.viz import figures, figures_all, network, neurons, vqgan_inversion  # noqa: F401 - import them all
    assert callable(viz.render) and callable(viz.vqgan_imagine) and callable(viz.imagine)
    assert not isinstance(viz.render, type(sys)) and not isinstance(viz.vqgan_imagine, type(sys))
    for name in viz.__all__:
        assert getattr(viz, name) is not None
    for name in brivl.__all__:
        assert getattr(brivl, name) is not None
    assert brivl.load.__module__ == "brivl.hub"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        viz.nope  # noqa: B018
    with pytest.raises(AttributeError):
        brivl.nope  # noqa: B018


def test_shipped_description_matches_the_shipped_heads_and_what_the_model_says():
    folder = describe.model_folder("brivl-lite")
    record = json.loads((folder / describe.DESCRIPTION_NAME).read_text(encoding="utf-8"))
    assert record["fingerprint"] == describe.fingerprint(folder), "brivl-lite changed: rerun write_description"
    built = command_function("brivl.commands:model_rows")(brivl.load("brivl-lite"))
    assert describe.stored_rows(folder) == [(k, str(v)) for k, v in built]


def test_info_on_brivl_lite_loads_no_torch(tmp_path):
    code = ("import contextlib, io, json, sys\nfrom brivl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = main(['info', 'brivl-lite'])\n"
            f"print(json.dumps({{'code': code, 'heavy': {_loaded_heavy()}, 'out': out.getvalue()}}))")
    result = _run(code, tmp_path)
    assert result["code"] == 0 and result["heavy"] == []
    assert "parameters      image 9.59 M" in result["out"] and "Unigram, 250,002 tokens" in result["out"]


def test_info_on_a_folder_is_built_once_cached_then_rebuilt_when_its_files_change(tmp_path):
    folder = tmp_path / "model"
    brivl.load("tiny").save_pretrained(folder)
    code = ("import contextlib, io, json, sys\nfrom brivl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    code = main(['info', {str(folder)!r}])\n"
            f"print(json.dumps({{'code': code, 'heavy': {_loaded_heavy()}, 'out': out.getvalue()}}))")
    first = _run(code, tmp_path)
    assert first["code"] == 0 and "torch" in first["heavy"]  # described by building it
    second = _run(code, tmp_path)
    assert second["heavy"] == [] and second["out"] == first["out"]  # from the cache
    config = json.loads((folder / "config.json").read_text())
    config["queue_size"] = 96  # a changed file: the cached description is stale
    (folder / "config.json").write_text(json.dumps(config))
    third = _run(code, tmp_path)
    assert "torch" in third["heavy"] and "queue 96" in third["out"] and "queue 96" not in first["out"]


def test_a_damaged_stored_description_is_rebuilt_not_trusted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRIVL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    brivl.load("tiny").save_pretrained(folder)
    (folder / describe.DESCRIPTION_NAME).write_text('{"fingerprint": "not this one", "rows": [["model", "lie"]]}')
    assert describe.stored_rows(folder) is None
    cached = describe._cache_file(describe.fingerprint(folder))  # noqa: SLF001 - where a description is cached
    cached.parent.mkdir(parents=True)
    cached.write_text("{ truncated")
    from brivl.cli import main
    assert main(["info", str(folder)]) == 0
    assert "lie" not in capsys.readouterr().out
    assert json.loads(cached.read_text())["fingerprint"] == describe.fingerprint(folder)  # replaced, atomically


def test_a_core_floor_without_its_extra_adds_no_commands(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kornia" else real(name, *a))
    sub = [a for a in build_parser(floors=True)._actions if a.dest == "command"][0]
    assert "info" in sub.choices and "imagine" not in sub.choices and "build-default" not in sub.choices


def test_the_atomic_writer_needs_no_torch_and_leaves_the_old_file_on_a_failed_write(tmp_path):
    code = ("import json, sys\nfrom pathlib import Path\nfrom brivl.atomic import atomic_write_bytes, write_atomically\n"
            f"p = Path({str(tmp_path / 'f.json')!r})\natomic_write_bytes(p, b'old')\n"
            "def half(tmp):\n    tmp.write_bytes(b'ne')\n    raise OSError(28, 'No space left on device')\n"
            "try:\n    write_atomically(p, half)\nexcept ValueError as e:\n    msg = str(e)\n"
            f"print(json.dumps({{'heavy': {_loaded_heavy()}, 'msg': msg, 'content': p.read_text(), "
            "'files': sorted(x.name for x in p.parent.iterdir())}))")
    result = _run(code, tmp_path)
    assert result["heavy"] == [] and result["content"] == "old"
    assert "no space left on the disk" in result["msg"] and "unchanged" in result["msg"]
    assert [f for f in result["files"] if f != "cache"] == ["f.json"]  # the half-written temporary file is gone
