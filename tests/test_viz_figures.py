"""viz.figures: the paper's Fig. 2 on the tiny model, the channel check, the grid writer, and the two benchmarks'
core functions (imported, not run as scripts)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brivl.viz import figures

ROOT = Path(__file__).resolve().parents[1]

# Typed in from the paper (Fig. 2 caption and the Results text), not copied from brivl.viz.figures.
PAPER_PROMPTS = {
    "a": ["nature", "time", "science", "dream"],
    "b": ["Every cloud has a silver lining.",
          "Let life be beautiful like summer flowers.",
          "A few peach flowers start to blossom outside the bamboo grove.",
          "The sun goes down below the mountains, and the Yellow River flows into the sea."],
    "c": ["mountains with forests", "mountains with stones", "mountains with snow", "mountains with waterfall"],
    "d": ["forest", "mountains"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fig2_on_tiny_writes_grid_and_json_with_the_papers_prompts(tiny, tmp_path):
    seen = []
    info = figures.fig2(tiny, tmp_path, steps=2, size=64, seed=3, channels=(3, 100, 255), progress=False,
                        callback=lambda panel, step, images: seen.append((panel, step, images.shape[0])))
    saved = json.loads((tmp_path / "fig2.json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["prompts"] == PAPER_PROMPTS
    assert saved["channels"] == [3, 100, 255] and saved["layer"] == "llp" and saved["layer_channels"] == 256
    for key, value in {"model": "tiny", "steps": 2, "size": 64, "seed": 3, "param": "fft"}.items():
        assert saved[key] == value, key
    assert saved["time_s"] > 0 and set(saved["seconds"]) == {"a", "b", "c", "d"}
    # One batch per panel: four prompts each in a-c, every (channel, text) pair in d.
    assert saved["batches"] == {"a": 4, "b": 4, "c": 4, "d": 6}
    assert {(panel, n) for panel, step, n in seen} == {("a", 4), ("b", 4), ("c", 4), ("d", 6)}
    assert saved["panel_d_rows"][:2] == [{"channel": 3, "text": "forest"}, {"channel": 3, "text": "mountains"}]
    with Image.open(tmp_path / "fig2.png") as im:
        assert im.format == "PNG" and im.width > 800 and im.height > im.width
    cells = [c for panel in saved["files"]["cells"].values() for c in panel]
    assert len(cells) == 18
    with Image.open(tmp_path / cells[0]) as im:
        assert im.size == (64, 64)


def test_fig2_channel_beyond_the_layer_is_a_clear_error_before_rendering(tiny, tmp_path):
    with pytest.raises(figures.ChannelError, match=r"456, 678 out of range.*256 channels"):
        figures.fig2(tiny, tmp_path / "out", steps=1, size=64)  # the paper's 108, 456, 678
    assert not (tmp_path / "out").exists()
    with pytest.raises(figures.ChannelError, match="not one of the model's feature layers"):
        figures.layer_channels(tiny, "nope")
    assert figures.layer_channels(tiny, "llp") == 256


def test_save_grid_and_png(tmp_path):
    images = torch.rand(5, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    path = figures.save_grid(images, tmp_path / "g.png", titles=[f"t{i}" for i in range(5)],
                             captions=["a long caption that wraps over more than one line"] * 5, ncols=3, title="x")
    with Image.open(path) as im:
        assert im.format == "PNG"
    figures.save_png(images[1], tmp_path / "one.png")
    with Image.open(tmp_path / "one.png") as im:
        back = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    assert back.shape == (3, 32, 40) and (back - images[1]).abs().max() <= 0.5 / 255 + 1e-6


def test_render_bench_core_runs_on_tiny(tiny):
    bench = _bench("render")
    r = bench.measure(tiny, steps=2, size=64, prompts=4, repeats=1)
    for key in ("render_steps_per_s", "bare_steps_per_s", "render_vs_bare", "per_prompt_batched_s",
                "per_prompt_alone_s", "batched_vs_alone_per_prompt"):
        assert r[key] > 0, key
    assert r["render_vs_bare"] == pytest.approx(r["render_steps_per_s"] / r["bare_steps_per_s"])
    with pytest.raises(ValueError, match="prompts"):
        bench.measure(tiny, steps=1, prompts=1)


def test_imagine_accuracy_concepts_are_distinct_imagenet_classes():
    bench = _bench("imagine_accuracy")
    idx = bench.concept_indices()
    assert len(idx) >= 30 and len(set(idx)) == len(idx)
    assert all(0 <= i < 1000 for i in idx)


def test_imagine_accuracy_verdicts():
    bench = _bench("imagine_accuracy")
    probs = torch.zeros(2, 1000)
    probs[0, [5, 7, 9, 11, 13, 15]] = torch.tensor([0.5, 0.2, 0.1, 0.08, 0.07, 0.05])
    probs[1, 3] = 1.0
    names = [f"c{i}" for i in range(1000)]
    rows = bench.verdicts(probs, [13, 3], names, k=5)
    assert rows[0]["hit_topk"] and not rows[0]["hit_top1"] and rows[0]["target_rank"] == 5
    assert rows[0]["top1"] == "c5" and rows[1]["hit_top1"] and rows[1]["target_rank"] == 1
    assert not bench.verdicts(probs, [15, 4], names, k=5)[0]["hit_topk"]


def test_imagine_accuracy_runs_on_tiny_and_writes_json_and_grid(tiny, tmp_path):
    bench = _bench("imagine_accuracy")
    results, images = bench.run(tiny, bench.Judge(2), concepts=bench.CONCEPTS[:3], steps=2, size=48, batch=2,
                                progress=False)
    assert images.shape == (3, 3, 48, 48)
    assert results["n"] == 3 and 0 <= results["rate_topk"] <= 1 and results["items"][0]["class"] == "goldfish"
    js, png = bench.write(results, images, tmp_path, "tiny")
    assert json.loads(js.read_text())["items"][2]["prompt"] == "a volcano"
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_grid_text_with_chinese_uses_a_cjk_font():
    from brivl.viz.figures import _text_font
    from brivl.viz.fonts import covers, find_cjk_font

    assert _text_font(["a goldfish", "judge: goldfish"])(8) == {"fontsize": 8}
    chinese = _text_font(["+ 金鱼"])(8)
    if find_cjk_font() is None:  # dev/setup.sh installs one; without it the fallback must still be a plain size
        assert chinese == {"fontsize": 8}
    else:
        assert covers(chinese["fontproperties"].get_file(), "金鱼柠檬") and chinese["fontproperties"].get_size() == 8
