"""The studio through its API (gradio_client), on the tiny model, in its own process: every tab answers, results
come with PNG + JSON downloads, bad input gives a readable message and the studio keeps serving, Stop ends a
render, and 8 concurrent clients x 3 requests get their own seed's image with no errors."""
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from studio_server import ROOT, studio

FAST = {"steps": 4, "size": 64}


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    cache = tmp_path_factory.mktemp("brivl-cache")  # the phrase indexes of these tests stay out of ~/.cache
    allowed = ["--allow-dir", str(ROOT), "--allow-dir", str(tmp_path_factory.getbasetemp())]  # the tests' files
    with studio(["tiny"], "--steps", "4", "--size", "64", *allowed, env={"BRIVL_CACHE": str(cache)}) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _imagine(client, prompt="a red apple", seed=0, model="tiny", steps=4, size=64):
    return client.predict(prompt, model, steps, size, seed, "fft", True, 0.05, api_name="/imagine")


def _files(files):
    png = next(Path(f) for f in files if f.endswith(".png"))
    meta = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text(encoding="utf-8"))
    return png, meta


def _error_text(client, *args, api_name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_imagine_streams_then_returns_png_and_its_settings(client):
    job = client.submit("夕阳下的大海", "tiny", 12, 64, 7, "pixel", False, 0.1, api_name="/imagine")
    outputs = list(job)
    assert len(outputs) >= 2, "no previews streamed before the final image"
    image, status, files = job.result()
    assert status.startswith("done: 12 steps")
    png, meta = _files(files)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (64, 64)
    assert {k: meta[k] for k in ("kind", "model", "text", "steps", "size", "seed", "param", "decorrelate", "lr")} == {
        "kind": "imagine", "model": "tiny", "text": "夕阳下的大海", "steps": 12, "size": 64, "seed": 7,
        "param": "pixel", "decorrelate": False, "lr": 0.1}
    assert isinstance(meta["final_objective"], float) and meta["time_s"] > 0


def test_same_seed_same_image_other_seed_other_image(client):
    a, b, c = (_files(_imagine(client, seed=s)[2])[0].read_bytes() for s in (3, 3, 4))
    assert a == b and a != c


@pytest.mark.parametrize("prompt, model, expected", [
    ("   ", "tiny", "the prompt is empty"),
    ("forest", "/no/such/model-folder", "outside the folders this studio may read"),
    ("forest", str(ROOT / "no-such-model-folder"), "no-such-model-folder' not found"),
])
def test_bad_render_input_is_a_readable_message(client, prompt, model, expected):
    text = _error_text(client, prompt, model, 4, 64, 0, "fft", True, 0.05, api_name="/imagine")
    assert expected in text


def test_bad_uploads_are_refused_in_words_and_the_studio_keeps_serving(client, tmp_path):
    from gradio_client import handle_file

    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    assert "notes.png: not an image file" in _error_text(client, handle_file(str(notes)), "the sun", "tiny", 0.5,
                                                         api_name="/patches")
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(huge)  # 48 megapixels, a small file
    assert "megapixels" in _error_text(client, handle_file(str(huge)), "cat, dog", "{}", "tiny",
                                       api_name="/classify")
    assert "no image" in _error_text(client, None, "cat, dog", "{}", "tiny", api_name="/classify")
    assert "at least two labels" in _error_text(client, handle_file(str(ROOT / "examples/sunset.png")), "cat", "{}",
                                                "tiny", api_name="/classify")
    assert "no such folder" in _error_text(client, "sea", str(tmp_path / "missing"), 4, "tiny", api_name="/retrieve")
    assert _imagine(client)[1].startswith("done:")  # still serving


def test_stop_ends_a_long_render(client):
    job = client.submit("a long render", "tiny", 1000, 64, 0, "fft", True, 0.05, api_name="/imagine")
    t0 = time.perf_counter()
    while not job.outputs() and time.perf_counter() - t0 < 60:
        time.sleep(0.1)
    assert job.outputs(), "no preview arrived"
    client.predict(api_name="/imagine_stop")
    while not job.done() and time.perf_counter() - t0 < 60:
        time.sleep(0.1)
    assert job.done(), "the render went on after Stop"
    last = job.outputs()[-1]
    assert not str(last[1]).startswith("done:")  # stopped before its 1000 steps


def test_neuron_and_top_activating_images(client):
    image, status, files = client.predict("tiny", "llp", 5, "forest", 1.0, 4, 64, 0, "fft", True, 0.05,
                                          api_name="/neuron")
    png, meta = _files(files)
    assert status.startswith("done:") and meta["layer"] == "llp" and meta["channel"] == 5 and meta["text"] == "forest"
    assert "the channel's mean activation + 1 \u00d7 the cosine with \u201cforest\u201d" in status  # said in words
    job = client.submit("tiny", "llp", 5, str(ROOT / "examples"), 2, api_name="/top_images")
    gallery, table, note, files = job.result()
    assert len(gallery) == 2 and "2 images scored" in note
    assert any(isinstance(out[2], str) and out[2].startswith("scoring llp-5: ") for out in job.outputs())
    _, meta = _files(files)
    scores = [t["activation"] for t in meta["top"]]
    assert scores == sorted(scores, reverse=True)
    assert [row[2] for row in table["data"]] == [round(s, 4) for s in scores]  # the scores shown in the page
    assert "out of range" in _error_text(client, "tiny", "llp", 99999, "", 1.0, 4, 64, 0, "fft", True, 0.05,
                                         api_name="/neuron")


def test_classify_retrieve_and_patches(client):
    from gradio_client import handle_file

    sunset = handle_file(str(ROOT / "examples/sunset.png"))
    label, files = client.predict(sunset, "sunset\nforest, 汽车", "a photo of {}", "tiny", api_name="/classify")
    assert {c["label"] for c in label["confidences"]} == {"sunset", "forest", "汽车"}
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-4
    _, meta = _files(files)
    assert meta["template"] == "a photo of {}" and len(meta["scores"]) == 3
    job = client.submit("夕阳", str(ROOT / "examples"), 5, "tiny", api_name="/retrieve")
    gallery, note, _ = job.result()
    assert len(gallery) == 2 and "2 images ranked" in note
    progress = [out[1] for out in job.outputs() if isinstance(out[1], str) and "of 2 images" in out[1]]
    assert progress and progress[0].startswith("embedding the folder: ")  # streamed before the answer
    picture, table, files = client.predict(sunset, "the sun", "tiny", 0.5, api_name="/patches")
    png, meta = _files(files)
    assert len(meta["patches"]) == 37 and len(table["data"]) == 5
    with Image.open(png) as im:
        assert max(im.size) == 384  # the download: the overlay itself
    with Image.open(picture) as im:
        w, h = im.size
        assert 384 <= h <= 420 and w >= h + 80  # in the page: the overlay with its colour bar beside it


def test_phrases_top_k_and_map(client, tmp_path):
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(["运动", "足球", "篮球", "汽车", "火车", "音乐", "大海", "森林", "city", "music"]),
                       encoding="utf-8")
    table, picture, note, files = client.predict("运动", "tiny", str(phrases), 0, 5, "pca", 0, api_name="/phrases")
    assert len(table["data"]) == 5 and "top 5 of 10 phrases" in note
    _, meta = _files(files)
    assert [t["rank"] for t in meta["top"]] == [1, 2, 3, 4, 5]


def test_compare_renders_both_models_side_by_side(client):
    a, b, status, files = client.predict("snow", "tiny", "tiny", 3, 64, 1, "fft", True, 0.05, api_name="/compare")
    assert status.startswith("done")
    png, meta = _files(files)
    with Image.open(png) as im:
        assert im.size == (64 * 2 + 8, 64)
    assert meta["models"] == ["tiny", "tiny"]
    cross = meta["cross_cosine"]  # each render under both models; the same model twice: the same numbers
    assert len(cross) == 2 and all(len(c) == 2 and all(-1 <= v <= 1 for v in c.values()) for c in cross)
    assert list(cross[0].values())[0] == list(cross[0].values())[1] and "cosine under B" in status
    assert "choose Model B" in _error_text(client, "snow", "tiny", "", 3, 64, 1, "fft", True, 0.05, api_name="/compare")
    missing = str(ROOT / "no-checkpoint")
    assert "not found" in _error_text(client, "snow", "tiny", missing, 3, 64, 1, "fft", True, 0.05, api_name="/compare")


@pytest.mark.slow
def test_eight_concurrent_clients_each_get_their_own_image(url):
    spec = importlib.util.spec_from_file_location("studio_load", ROOT / "bench" / "studio_load.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    stats = bench.load_test(url, model="tiny", clients=8, requests=3, steps=3, size=64)
    print(f"\nload (tiny, 3 steps, 64 px): p50 {stats['p50_s']} s, p95 {stats['p95_s']} s, errors {stats['errors']}")
    assert stats["errors"] == 0, stats["error_texts"]
    assert stats["completed"] == 24
    assert stats["distinct_images"] == 24
    assert stats["not_own_image"] == []
    assert np.isfinite(stats["p95_s"])


def test_vqgan_tab_inverts_through_a_vqgan_folder(client, tmp_path):
    from test_figures_all import _random_vqgan

    from brivl.viz.vqgan import save_vqgan

    folder = tmp_path / "vqgan-random"
    save_vqgan(_random_vqgan(), folder)
    image, status, files = client.predict("castle in the clouds", "tiny", str(folder), 3, 64, 0, "z", 2, 0.1,
                                          api_name="/vqgan")
    assert status.startswith("done: 3 steps")
    png, meta = _files(files)
    with Image.open(png) as im:
        assert im.size == (64, 64)
    assert meta["kind"] == "vqgan" and meta["vqgan"] == str(folder) and meta["param"] == "z"
    assert "cannot be loaded" in _error_text(client, "castle", "tiny", str(tmp_path / "none"), 3, 64, 0, "z", 2, 0.1,
                                             api_name="/vqgan")
