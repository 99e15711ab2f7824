"""`brivl build-default` end to end at a tiny scale: every stage runs, resumes, and yields a loadable brivl-lite."""
import json

import pytest
import torch

import brivl
from brivl.lite.recipe import BuildConfig, build_default

pytestmark = pytest.mark.slow


def test_tiny_build_makes_a_loadable_model_and_a_report(tmp_path):
    cfg = BuildConfig(work=str(tmp_path / "work"), out=str(tmp_path / "lite"), synth_per_class=1, synth_classes=4,
                      synth_size=64, synth_steps=8, synth_batch=4, procedural=12, procedural_size=64, views=1,
                      steps=4, batch_size=8, queue_size=16, warmup_steps=1, eval_crops=0)
    report = build_default(cfg, progress=False)
    work = tmp_path / "work"
    rows = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len(list((work / "images").glob("*.png"))) == 16
    assert all(0 <= r["class"] < 1000 and r["text"] for r in rows)
    assert set(report) >= {"top1", "top5", "images", "load_s", "out"} and report["images"] > 10
    heads = tmp_path / "lite" / "model.safetensors"
    assert heads.stat().st_size < 25 * 2**20
    model = brivl.load(tmp_path / "lite")
    with torch.no_grad():
        assert model.encode_text(["a photo of a tabby cat."]).shape == (1, 384)
    # A second run finds every stage done and only re-exports and re-evaluates.
    before = {p.name: p.stat().st_mtime_ns for p in (work / "images").iterdir()}
    again = build_default(cfg, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (work / "images").iterdir()} == before
    assert again["top5"] == report["top5"]
