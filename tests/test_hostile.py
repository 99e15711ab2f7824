"""Hostile input (issue 17): no file runs code, allocates gigabytes or leaks through the studio.

Every payload is written inside tmp_path; a payload that would run only writes a marker file there.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import brivl
from brivl.cli import main
from brivl.hf import RemoteCodeError

EVIL_PY = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def _evil_model_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A saved tiny model whose tokenizer folder names a .py through auto_map; returns (folder, marker)."""
    folder, marker = tmp_path / "evil-model", tmp_path / "payload-ran.txt"
    model = brivl.load("tiny")
    assert model.tokenizer is not None  # built now, so saving writes its files
    model.config.text.tokenizer = ""  # a tokenizer read from the folder, the way converted models are
    model.save_pretrained(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    cfg["tokenizer_class"] = "EvilTokenizer"
    cfg_path.write_text(json.dumps(cfg))
    code = EVIL_PY.format(marker=str(marker)) + "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n"
    (folder / "tokenization_evil.py").write_text(code)
    return folder, marker


@pytest.fixture
def no_prompt(monkeypatch):
    """Fail the test if anything asks the terminal a question (transformers' trust_remote_code prompt)."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("something prompted for input")

    monkeypatch.setattr("builtins.input", refuse)


def test_model_folder_with_auto_map_is_refused_and_its_code_never_runs(tmp_path, no_prompt):
    folder, marker = _evil_model_folder(tmp_path)
    with pytest.raises(RemoteCodeError, match="auto_map.*never runs code") as info:
        brivl.load(folder)
    assert "\n" not in str(info.value) and "tokenization_evil.EvilTokenizer" in str(info.value)
    assert not marker.exists()


def test_cli_info_on_an_auto_map_folder_is_one_line_and_no_prompt(tmp_path, capsys, no_prompt):
    folder, marker = _evil_model_folder(tmp_path)
    assert main(["info", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "never runs code" in err
    assert not marker.exists()


def test_tokenizer_option_with_auto_map_is_refused(tmp_path, no_prompt):
    folder, marker = _evil_model_folder(tmp_path)
    with pytest.raises(RemoteCodeError):
        brivl.load("tiny", tokenizer=folder)
    from brivl.hf import hf_tokenizer, load_tokenizer

    with pytest.raises(RemoteCodeError):
        load_tokenizer(str(folder))
    with pytest.raises(RemoteCodeError):
        hf_tokenizer(folder)
    assert not marker.exists()


def test_backbone_fields_cannot_name_code(tmp_path):
    from brivl.config import ConfigError
    from brivl.hf import text_backbone

    fields = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "vocab_size": 10, "auto_map": {"AutoModel": "evil.Model"},
              "_name_or_path": str(tmp_path)}
    with pytest.raises(ConfigError, match="auto_map"):
        text_backbone(fields)
    with pytest.raises(ConfigError, match="not a transformers model type"):
        text_backbone({"model_type": "evil", "hidden_size": 32})
