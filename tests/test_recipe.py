"""`brivl build-default` end to end at a tiny scale: every stage runs, resumes, and yields a loadable brivl-lite."""
import json

import pytest
import torch

import brivl
from recipes.brivl_lite.recipe import BuildConfig, build_default, class_prompt_embeddings
from recipes.brivl_lite.teacher_init import class_space_map

pytestmark = pytest.mark.slow


def test_tiny_build_makes_a_loadable_model_and_a_report(tmp_path):
    cfg = BuildConfig(work=str(tmp_path / "work"), out=str(tmp_path / "lite"), synth_per_class=1, synth_classes=4,
                      synth_size=64, synth_steps=8, synth_batch=4, mosaics=4, procedural=12, procedural_size=64,
                      views=1, steps=4, batch_size=8, queue_size=16, warmup_steps=1, eval_crops=0, label_prompts=1,
                      distill_classes=32, refine={"steps": 2, "batch_size": 16, "distill_weight": 3.0})
    report = build_default(cfg, progress=False)
    work = tmp_path / "work"
    rows = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and len(list((work / "images").glob("*.png"))) == 20
    assert len(list((work / "images").glob("mosaic-*.png"))) == 4
    assert all(0 <= r["class"] < 1000 and r["text"] for r in rows)
    assert set(report) >= {"top1", "top5", "images", "load_s", "out"} and report["images"] > 10
    metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all(m["loss_distill"] >= 0 for m in metrics)  # MoCo + distillation ran
    refined = [json.loads(line) for line in (work / "run-refine" / "metrics.jsonl").read_text().splitlines()]
    assert len(refined) == 2 and all(m["loss_distill"] >= 0 for m in refined)  # the refine run went on from it
    assert json.loads((work / "run-refine" / "train_config.json").read_text())["batch_size"] == 16
    # The align stage set the exported image head from the teacher's classifier and the refined text head.
    assert (work / "aligned" / "source.txt").read_text().startswith(str(work / "run-refine"))
    aligned = brivl.load(work / "aligned")
    classifier = aligned.imgencoder.backbone.get_classifier()
    m, c = class_space_map(classifier.weight, classifier.bias, class_prompt_embeddings(aligned, work / "cache"))
    conv = aligned.imgencoder.learnable["max_pool"][0]
    assert torch.allclose(conv.weight.flatten(1), m, atol=1e-4 * m.abs().max().item())
    assert torch.allclose(conv.bias, c, atol=1e-4 * c.abs().max().item())
    exported = brivl.load(tmp_path / "lite").imgencoder.learnable["max_pool"][0].weight
    assert torch.allclose(exported, conv.weight, rtol=1e-3, atol=1e-4)  # what ships is that head, in fp16
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


def test_captions_avoid_the_heldout_sentence_pairs_and_use_chinese():
    from brivl.lite.efficientnet_lite import short_class_names
    from recipes.brivl_lite.recipe import (
        _caption,
        heldout_sentence_pairs,
        label_prompts,
        sentence_pair,
    )
    from recipes.brivl_lite.zh import ZH_CLASS_NAMES

    names = short_class_names()
    pairs = heldout_sentence_pairs()
    assert len(pairs) == 200 == len(set(pairs)) and pairs == heldout_sentence_pairs()
    heldout = {s for t, c in pairs for s in sentence_pair(t, c)}
    g = torch.Generator().manual_seed(0)
    classes = sorted({c for _, c in pairs})[:40]
    captions = [_caption(c, names, 0.5, set(pairs), g) for c in classes for _ in range(30)]
    assert not heldout & set(captions)
    chinese = [c for c in captions if any("\u4e00" <= ch <= "\u9fff" for ch in c)]
    assert 0.3 < len(chinese) / len(captions) < 0.7
    prompts = label_prompts(names, 4)
    assert len(prompts) == 1000 and {len(p) for p in prompts} == {4}
    cat = names.index("tabby")
    assert prompts[cat][:2] == ["a photo of a tabby.", "a picture of a tabby."]
    assert ZH_CLASS_NAMES[cat] in prompts[cat][2] and ZH_CLASS_NAMES[cat] == prompts[cat][3]


def test_unknown_refine_options_are_refused(tmp_path):
    from brivl.config import ConfigError

    path = tmp_path / "build.yaml"
    path.write_text("refine: {steps: 10, batchsize: 8}\n")
    with pytest.raises(ConfigError, match="batchsize"):
        BuildConfig.load(path)
