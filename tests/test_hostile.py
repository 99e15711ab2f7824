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
    from brivl.hf import hf_tokenizer
    from brivl.tokenizer import load_tokenizer  # the remote-code check moved into it (no hf <-> tokenizer cycle)

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


# --- pickles: scanned before unpickling ------------------------------------------------------------------------

class _Alloc:
    """Pickles as a call that allocates: `ctor(*args)` (bytearray(n), list(range(n)))."""

    def __init__(self, ctor, *args):
        self.ctor, self.args = ctor, args

    def __reduce__(self):
        return (self.ctor, self.args)


def _peak_bytes(fn) -> int:
    """Peak Python allocation (tracemalloc) while fn runs; fn's exception is swallowed."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_pth_with_a_huge_bytearray_is_refused_by_name_within_small_memory(tmp_path):
    import torch

    from brivl.checkpoint import CheckpointError, load_torch_pickle

    path = tmp_path / "big.pth"
    torch.save({"learnable": {"imgencoder.x": _Alloc(bytearray, 1_500_000_000)}}, path)
    size = path.stat().st_size
    assert size < 2048
    with pytest.raises(CheckpointError, match=r"refused.*'builtins\.bytearray'") as info:
        load_torch_pickle(path)
    assert "\n" not in str(info.value)
    assert _peak_bytes(lambda: load_torch_pickle(path)) < 64 * size + 2**20  # not 1.5 GB


def test_ckpt_with_list_of_range_is_refused_by_name_within_small_memory(tmp_path):
    import torch

    from brivl.viz.vqgan import VQGANError, read_ckpt

    path = tmp_path / "big.ckpt"
    torch.save({"state_dict": {}, "epoch": _Alloc(list, range(50_000_000))}, path)
    size = path.stat().st_size
    with pytest.raises(VQGANError, match=r"refused.*'builtins\.(list|range)'"):
        read_ckpt(path)
    assert _peak_bytes(lambda: read_ckpt(path)) < 64 * size + 2**20


def test_protocol_4_stack_global_is_named(tmp_path):
    import pickle

    from brivl.checkpoint import CheckpointError, load_torch_pickle

    path = tmp_path / "p4.pth"
    path.write_bytes(pickle.dumps({"learnable": _Alloc(bytearray, 10**9)}, protocol=4))
    with pytest.raises(CheckpointError, match=r"refused.*'builtins\.bytearray'"):
        load_torch_pickle(path)


def _zip_checkpoint(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A torch-style zip archive with the given data.pkl and storage records."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")
        for key, data in (records or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


def _pickle_with_pid(obj, pid) -> bytes:
    import io
    import pickle

    class P(pickle.Pickler):
        def persistent_id(self, o):
            return pid if o is marker else None

    marker = object()
    buf = io.BytesIO()
    P(buf, protocol=2).dump({"learnable": {"imgencoder.x": marker}} if obj is None else obj)
    return buf.getvalue()


def test_non_storage_persistent_id_is_one_line(tmp_path):
    from brivl.checkpoint import CheckpointError, load_torch_pickle

    path = _zip_checkpoint(tmp_path / "pid.pth", _pickle_with_pid(None, ("evil", 1, 2)))
    with pytest.raises(CheckpointError, match="persistent id that is not a storage") as info:
        load_torch_pickle(path)
    assert "\n" not in str(info.value)


def test_storage_declaring_more_bytes_than_the_file_holds_is_refused(tmp_path):
    import torch

    from brivl.checkpoint import CheckpointError, load_torch_pickle

    pid = ("storage", torch.FloatStorage, "0", "cpu", 500_000_000)
    path = _zip_checkpoint(tmp_path / "lie.pth", _pickle_with_pid(None, pid), {"0": b"\0" * 4})
    with pytest.raises(CheckpointError, match="declares 2000000000 bytes but the file holds 4"):
        load_torch_pickle(path)


def test_build_on_an_ordered_dict_is_one_line(tmp_path):
    import pickle

    from brivl.checkpoint import CheckpointError, load_torch_pickle

    # OrderedDict() then BUILD with a non-dict state: torch's own unpickler fails with an AssertionError.
    data = b"\x80\x02ccollections\nOrderedDict\n)R" + b"K\x05b" + b"."
    pickle.loads(b"\x80\x02ccollections\nOrderedDict\n)R.")  # the prefix is a valid pickle
    path = _zip_checkpoint(tmp_path / "build.pth", data)
    with pytest.raises(CheckpointError) as info:
        load_torch_pickle(path)
    assert "\n" not in str(info.value) and "build.pth" in str(info.value)


def test_honest_checkpoint_still_loads(tmp_path):
    import torch

    from brivl.checkpoint import load_torch_pickle

    path = tmp_path / "ok.pth"
    state = {"learnable": {"imgencoder.w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor([1, 2]),
                           "h": torch.ones(2, dtype=torch.half), "p": torch.nn.Parameter(torch.ones(2))},
             "epoch": 3, "names": ["a", "b"], "pair": (1.5, None), "tags": {"x", "y"}, "raw": b"xy", "z": 1 + 2j}
    torch.save(state, path)
    loaded = load_torch_pickle(path)
    assert torch.equal(loaded["learnable"]["imgencoder.w"], state["learnable"]["imgencoder.w"])
    assert torch.equal(loaded["learnable"]["h"], state["learnable"]["h"])
    assert loaded["epoch"] == 3 and loaded["names"] == ["a", "b"] and loaded["pair"] == (1.5, None)
    assert loaded["tags"] == {"x", "y"} and loaded["raw"] == b"xy" and loaded["z"] == 1 + 2j
    legacy = tmp_path / "legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_torch_pickle(legacy)["learnable"]["n"], state["learnable"]["n"])


# --- ugly input: one line, non-zero exit ------------------------------------------------------------------------

def _one_line_error(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI, expect exit 2 and a single stderr line holding every word."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_invalid_utf8_in_a_command_line_text_is_one_line(capsys):
    import os

    text = os.fsdecode(b"caf\xe9")  # how Python hands invalid UTF-8 in argv over: a lone surrogate
    _one_line_error(capsys, ["encode-text", "tiny", text], "lone surrogate", "invalid UTF-8")


def test_invalid_utf8_on_stdin_is_one_line(capsys, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a cat\ncaf\xe9\n"), encoding="utf-8"))
    _one_line_error(capsys, ["encode-text", "tiny", "-"], "stdin is not UTF-8", "0xe9")


def test_non_utf8_manifest_is_one_line(tmp_path):
    from brivl.data import DataError, read_pairs

    manifest = tmp_path / "pairs.tsv"
    manifest.write_bytes("a.png\tune caf\u00e9\n".encode("utf-8") + "b.png\tun caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"pairs.tsv:2: not UTF-8 text \(byte 0xe9\)") as info:
        read_pairs(manifest)
    assert "\n" not in str(info.value)


def test_lone_surrogate_in_a_jsonl_manifest_is_named(tmp_path):
    from brivl.data import DataError, read_pairs

    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text('{"image": "a.png", "text": "ok"}\n{"image": "b.png", "text": "bad \\ud800"}\n')
    with pytest.raises(DataError, match="b.png holds a lone surrogate"):
        read_pairs(manifest)


@pytest.mark.parametrize("yaml_text, words", [
    ("data: x\nsteps: ten\n", ["steps must be an integer >= 1", "'ten'"]),
    ("data: x\nlr: fast\n", ["lr must be a number > 0", "'fast'"]),
    ("- data: x\n- steps: 3\n", ["mapping of options", "list"]),
    ("data: x\nbatch_size: 0\n", ["batch_size must be an integer >= 1", "0"]),
    ("data: x\nfreeze: {text_layers: two}\n", ["freeze.text_layers", "'two'"]),
    ("data: [unclosed\n", ["cannot read training config"]),
])
def test_bad_training_yaml_is_one_line(tmp_path, capsys, yaml_text, words):
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    _one_line_error(capsys, ["train", "--config", str(config)], *words)
    assert not (tmp_path / "runs").exists()


def test_numeric_strings_in_training_yaml_still_work():
    from brivl.train import TrainConfig

    cfg = TrainConfig.from_dict({"data": "x", "lr": "1e-4", "momentum": "0.99"})  # YAML reads 1e-4 as a string
    assert cfg.lr == 1e-4 and cfg.momentum == 0.99


def test_full_disk_while_saving_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import torch
    from safetensors import SafetensorError

    import brivl.checkpoint as ck

    target = tmp_path / "w.safetensors"
    ck.save_safetensors({"x": torch.ones(2)}, target)
    before = target.read_bytes()

    def full(*_args, **_kwargs):  # what safetensors raises when the disk fills mid-write
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(ck.CheckpointError, match="could not write \\(no space left on the disk\\)") as info:
        ck.save_safetensors({"x": torch.zeros(2)}, target)
    assert "\n" not in str(info.value)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]

    import errno

    def enospc(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", enospc)
    with pytest.raises(ck.CheckpointError, match="no space left"):
        ck.atomic_write_bytes(tmp_path / "state.json", b"{}")


def test_phrase_file_with_invalid_utf8_is_one_line(tmp_path, capsys):
    from brivl.viz.phrases import PhraseIndexError, read_phrases

    phrases = tmp_path / "phrases.txt"
    phrases.write_bytes("sea\nsunset\n".encode() + b"caf\xe9\n")
    with pytest.raises(PhraseIndexError, match=r"phrases.txt:3: not UTF-8 text \(byte 0xe9\)"):
        read_phrases(phrases)


# --- the studio serves only what its operator allowed (through gradio_client, against a running studio) -------

@pytest.fixture(scope="module")
def studio_dirs(tmp_path_factory):
    """(allowed, outside, cache): the studio may read `allowed` only."""
    from PIL import Image

    allowed, outside = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("outside")
    cache = tmp_path_factory.mktemp("cache")
    (outside / "secret.txt").write_text("secret-phrase-one\nsecret-phrase-two\n")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(outside / "secret.png")
    (allowed / "passwd.txt").symlink_to("/etc/passwd")
    (allowed / "secret-link.txt").symlink_to(outside / "secret.txt")
    (allowed / "photos-link").symlink_to(outside)
    (allowed / "mixed").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(allowed / "mixed" / "real.png")
    (allowed / "mixed" / "link.png").symlink_to(outside / "secret.png")
    (allowed / "binary.txt").write_bytes(b"token-abc123\xff\xfe\n")
    return allowed, outside, cache


@pytest.fixture(scope="module")
def client(studio_dirs):
    from gradio_client import Client
    from studio_server import studio

    allowed, _, cache = studio_dirs
    with studio(["tiny"], "--steps", "4", "--size", "64", "--allow-dir", str(allowed),
                env={"BRIVL_CACHE": str(cache)}) as url:
        c = Client(url, verbose=False)
        c.url_for_test = url
        yield c


def _refusal(client, *args, api_name: str) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def _phrases(client, source: str) -> str:
    return _refusal(client, "root", "tiny", source, 0, 5, "pca", 0, api_name="/phrases")


def test_studio_phrase_box_reads_no_file_outside_the_allowed_folders(client, studio_dirs):
    allowed, outside, cache = studio_dirs
    for source in ["/etc/passwd", str(allowed / "passwd.txt"), str(outside / "secret.txt"),
                   str(allowed / "secret-link.txt"), str(allowed / ".." / outside.name / "secret.txt")]:
        text = _phrases(client, source)
        assert "outside the folders this studio may read" in text, (source, text)
        assert "root:" not in text and "secret-phrase" not in text
    copies = list(cache.rglob("phrases.txt"))
    assert not any("root:" in p.read_text(errors="replace") or "secret" in p.read_text(errors="replace")
                   for p in copies)


def test_studio_echoes_no_content_of_a_file_that_does_not_parse(client, studio_dirs):
    allowed, _, _ = studio_dirs
    text = _phrases(client, str(allowed / "binary.txt"))
    assert "not UTF-8 text" in text and "token-abc123" not in text


def test_studio_image_folders_stay_inside_the_allowed_folders(client, studio_dirs):
    allowed, outside, _ = studio_dirs
    for folder in [str(outside), str(allowed / "photos-link"), "/etc"]:
        assert "outside the folders" in _refusal(client, "sea", folder, 4, "tiny", api_name="/retrieve")
        assert "outside the folders" in _refusal(client, "tiny", "llp", 0, folder, 2, api_name="/top_images")
    gallery, note, files = client.predict("sea", str(allowed / "mixed"), 4, "tiny", api_name="/retrieve")
    assert note.startswith("1 images ranked")  # the symlink to the outside image was dropped
    meta = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text(encoding="utf-8"))
    assert [Path(t["path"]).name for t in meta["top"]] == ["real.png"]


def test_studio_models_and_vqgans_stay_inside_the_allowed_folders(client, studio_dirs):
    allowed, outside, _ = studio_dirs
    brivl.load("tiny").save_pretrained(outside / "model")
    text = _refusal(client, "forest", str(outside / "model"), 4, 64, 0, "fft", True, 0.05, api_name="/imagine")
    assert "outside the folders" in text
    text = _refusal(client, "castle", "tiny", str(outside / "vq.ckpt"), 3, 64, 0, "z", 2, 0.1, api_name="/vqgan")
    assert "outside the folders" in text


def test_studio_file_route_serves_no_file_outside(client, studio_dirs):
    import urllib.error
    import urllib.request

    _, outside, _ = studio_dirs
    for path in ["/etc/passwd", str(outside / "secret.txt")]:
        try:
            with urllib.request.urlopen(f"{client.url_for_test}gradio_api/file={path}", timeout=10) as r:
                body = r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            assert e.code in (403, 404)
            continue
        assert "root:" not in body and "secret-phrase" not in body


def test_vqgan_yaml_errors_do_not_quote_the_file(tmp_path):
    from brivl.viz.vqgan import VQGANError, read_taming_yaml

    bad = tmp_path / "m.yaml"
    bad.write_text("model:\n  params: [unclosed-secret-value\n")
    with pytest.raises(VQGANError, match="not valid YAML") as info:
        read_taming_yaml(bad)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
