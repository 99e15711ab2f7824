"""The studio's parts without a server: input checks, the stop-able render stream, the per-model lock."""
import threading
import time

import pytest
import torch
from PIL import Image

from app.errors import StudioInputError, check_image_file, check_labels, check_prompt, check_render
from app.models import ModelPool, SharedLock
from app.paths import Roots
from app.stream import counted, progress_text, stream


def test_checks_refuse_bad_input_in_words(tmp_path):
    assert check_prompt("  夕阳下的大海 ") == "夕阳下的大海"
    with pytest.raises(StudioInputError, match="empty"):
        check_prompt(" \n ")
    assert check_render("8", 64.0, 3, "0.1") == (8, 64, 3, 0.1)
    for bad in [(0, 64, 0), (8, 4096, 0), (8, 64, -1)]:
        with pytest.raises(StudioInputError):
            check_render(*bad)
    assert check_labels("cat, dog\n汽车，猫") == ["cat", "dog", "汽车", "猫"]
    with pytest.raises(StudioInputError, match="at least two"):
        check_labels("cat, cat")
    text = tmp_path / "a.png"
    text.write_text("no")
    with pytest.raises(StudioInputError, match="a.png: not an image file"):
        check_image_file(str(text))
    big = tmp_path / "big.png"
    Image.new("L", (7000, 6000)).save(big)
    with pytest.raises(StudioInputError, match="42 megapixels"):
        check_image_file(str(big))
    ok = tmp_path / "ok.png"
    Image.new("RGB", (30, 20), (255, 0, 0)).save(ok)
    pixels = check_image_file(str(ok))
    assert pixels.shape == (3, 20, 30) and pixels[0].min() == 1


def test_missing_model_is_a_readable_error(tmp_path):
    with pytest.raises(StudioInputError, match="not found"):
        ModelPool(["tiny"], roots=Roots([tmp_path])).get(str(tmp_path / "no-such-folder"))
    with pytest.raises(StudioInputError, match="outside the folders this studio may read"):
        ModelPool(["tiny"], roots=Roots([tmp_path])).get("/no/such/folder")


def test_stream_yields_previews_then_the_result_and_stops_on_request():
    def run(callback):
        for step in range(5):
            callback(step, torch.zeros(1, 3, 4, 4))
        return "result"

    events = list(stream(run, threading.Event(), interval=0))
    assert [e.kind for e in events] == ["preview"] * 5 + ["done"] and events[-1].result == "result"

    flag = threading.Event()

    def endless(callback):
        step = 0
        while True:
            callback(step, torch.zeros(1, 3, 4, 4))
            step += 1
            time.sleep(0.001)

    kinds = []
    for ev in stream(endless, flag, interval=0):
        kinds.append(ev.kind)
        if len(kinds) == 3:
            flag.set()  # what the Stop button does
    assert kinds[:3] == ["preview"] * 3 and kinds[-1] == "stopped"


def test_errors_inside_the_render_reach_the_handler():
    def broken(callback):
        raise ValueError("lr too large")

    with pytest.raises(ValueError, match="lr too large"):
        list(stream(broken, threading.Event()))


def test_shared_lock_lets_readers_share_and_writers_wait():
    lock, log = SharedLock(), []
    inside = threading.Barrier(2, timeout=5)

    def reader(i):
        with lock.shared():
            inside.wait()  # both readers are inside at the same time
            log.append(f"r{i}")

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(5)
    assert sorted(log) == ["r0", "r1"]

    held = threading.Event()
    release = threading.Event()

    def writer():
        with lock.exclusive():
            held.set()
            release.wait(5)

    w = threading.Thread(target=writer)
    w.start()
    held.wait(5)
    got = []
    r = threading.Thread(target=lambda: (lock.shared().__enter__(), got.append(time.perf_counter())))
    t0 = time.perf_counter()
    r.start()
    time.sleep(0.2)
    assert not got  # a reader waits while the writer holds the model
    release.set()
    r.join(5)
    w.join(5)
    assert got and got[0] - t0 >= 0.2


def test_roots_refuse_paths_outside_symlinks_out_and_hidden_entries(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "photos").mkdir(parents=True)
    (allowed / ".ssh").mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (allowed / "link.txt").symlink_to(outside / "secret.txt")
    (allowed / "photos" / "out").symlink_to(outside)
    roots = Roots([allowed])
    assert roots.check(str(allowed / "photos"), "folder") == (allowed / "photos").resolve()
    for bad in [outside / "secret.txt", allowed / "link.txt", allowed / "photos" / "out", allowed / ".ssh",
                allowed / ".." / "outside", "/etc/passwd", "~/.ssh/id_rsa"]:
        with pytest.raises(StudioInputError, match="outside the folders"):
            roots.check(str(bad), "file")
    # refused before existence is looked at: a missing file outside says the same as an existing one
    with pytest.raises(StudioInputError, match="outside the folders"):
        roots.check(str(outside / "missing.txt"), "file")
    assert roots.keep([allowed / "link.txt", allowed / "photos"]) == [allowed / "photos"]


def test_uploads_cannot_be_named_even_inside_a_root(tmp_path, monkeypatch):
    uploads = tmp_path / "gradio"
    (uploads / "abc").mkdir(parents=True)
    (uploads / "abc" / "model.pth").write_bytes(b"x")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    with pytest.raises(StudioInputError, match="outside the folders"):
        Roots([tmp_path]).check(str(uploads / "abc" / "model.pth"), "model")


def test_typed_openclip_names_are_refused_unless_the_operator_listed_them(tmp_path):
    with pytest.raises(StudioInputError, match="OpenCLIP models are offered only"):
        ModelPool(["tiny"], roots=Roots([tmp_path])).get("openclip:ViT-B-32:/etc/x.pt")


def test_typed_hf_folders_must_lie_inside_the_roots(tmp_path):
    with pytest.raises(StudioInputError, match="outside the folders"):
        ModelPool(["tiny"], roots=Roots([tmp_path])).get("hf:/etc")
    with pytest.raises(StudioInputError, match="no such folder"):
        ModelPool(["tiny"], roots=Roots([tmp_path])).get(f"hf:{tmp_path / 'clip'}")


def test_counted_streams_progress_lines_then_returns_the_result_or_says_it_stopped():
    def job(report, stop_at=None):
        for done in range(1, 6):
            time.sleep(0.05)
            report(done * 10, 50)
        return "result"

    def drain(gen):
        lines = []
        while True:
            try:
                lines.append(next(gen))
            except StopIteration as end:
                return lines, end.value

    lines, value = drain(counted(job, threading.Event(), "scoring", "images", note="!", interval=0.0))
    assert value == "result"
    assert lines[0].startswith("scoring: 10 of 50 images (20%) in 0 s") and lines[-1].startswith("scoring: 50 of 50")
    assert all(line.endswith("!") for line in lines)
    flag = threading.Event()
    flag.set()  # stopped before the first report: the job's next report raises inside it
    lines, value = drain(counted(job, flag, "scoring", "images", shape=lambda line: ("x", line),
                                 stopped_note="; kept"))
    assert value is None and lines[-1][0] == "x" and lines[-1][1].startswith("stopped after") \
        and lines[-1][1].endswith("; kept")
    assert progress_text("a", 25, 100, "b", 10.0, 2.5) == "a: 25 of 100 b (25%) in 10 s, about 30 s left"
    assert progress_text("a", 25, 1000, "b", 10.0, 2.5).endswith("about 6 min left")
