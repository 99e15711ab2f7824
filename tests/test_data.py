"""Training data: manifests, the paper's augmentations, the resumable sampler, bad-item skipping, toy data."""
from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brivl.data import Augment, DataError, Pair, PairDataset, ResumableSampler, batches, read_pairs
from brivl.toydata import BACKDROPS, COLOURS, POSITIONS, SHAPES, make_toy_pairs


def _png(path: Path, colour=(200, 30, 30), size: int = 12, noise_seed: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise_seed is None:
        Image.new("RGB", (size, size), colour).save(path)
    else:
        rng = np.random.default_rng(noise_seed)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _colourful(seed: int = 0, size: int = 8) -> torch.Tensor:
    """A [3, size, size] image in [0, 1] whose channels all differ (so greying is detectable)."""
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _is_grey(img: torch.Tensor) -> bool:
    return torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


# --- read_pairs -----------------------------------------------------------------------------------

def test_jsonl_resolves_relative_paths_against_the_manifest_folder_and_accepts_caption(tmp_path):
    sub = tmp_path / "data" / "sub"
    sub.mkdir(parents=True)
    absolute = _png(tmp_path / "elsewhere" / "abs.png")
    lines = [
        json.dumps({"image": "imgs/a.png", "text": "a red square"}),
        "",  # blank lines are ignored
        json.dumps({"image": "b.png", "caption": "a caption, not a text"}),
        "   ",
        json.dumps({"image": str(absolute), "text": 42}),
    ]
    manifest = sub / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = read_pairs(manifest)
    assert pairs == [
        Pair(sub / "imgs" / "a.png", "a red square"),
        Pair(sub / "b.png", "a caption, not a text"),
        Pair(absolute, "42"),
    ]
    assert read_pairs(str(manifest)) == pairs  # a str path works as well as a Path


def test_tsv_with_header(tmp_path):
    manifest = tmp_path / "pairs.tsv"
    manifest.write_text("image\ttext\nx/a.png\ta dog\nb.png\ta cat\twith a tab inside\n", encoding="utf-8")
    pairs = read_pairs(manifest)
    assert pairs == [Pair(tmp_path / "x" / "a.png", "a dog"), Pair(tmp_path / "b.png", "a cat\twith a tab inside")]


def test_tsv_without_header_keeps_every_line(tmp_path):
    manifest = tmp_path / "pairs.tsv"
    manifest.write_text("a.png\tfirst\n\nb.png\tsecond\nc.png\tthird\n", encoding="utf-8")
    pairs = read_pairs(manifest)
    assert [p.text for p in pairs] == ["first", "second", "third"]
    assert [p.image for p in pairs] == [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]


def test_folder_of_images_with_txt_files(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("  text of a\n", encoding="utf-8")
    _png(tmp_path / "b.png")  # no b.txt: ignored
    _png(tmp_path / "nested" / "c.PNG")
    (tmp_path / "nested" / "c.txt").write_text("text of c", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("a stray text file without an image", encoding="utf-8")
    pairs = read_pairs(tmp_path)
    assert pairs == [Pair(tmp_path / "a.png", "text of a"), Pair(tmp_path / "nested" / "c.PNG", "text of c")]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "text": "ok"}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{manifest}:2:")) as e:
        read_pairs(manifest)
    assert "'image'" in str(e.value)


def test_jsonl_line_without_image_key_names_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"image": "a.png", "text": "ok"}, {"image": "b.png", "text": "ok"}, {"text": "no image"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{manifest}:3:")):
        read_pairs(manifest)


def test_jsonl_line_that_is_not_an_object_is_refused(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('["a.png", "a list"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{manifest}:1:")):
        read_pairs(manifest)


def test_tsv_line_without_tab_names_file_and_line(tmp_path):
    manifest = tmp_path / "pairs.tsv"
    manifest.write_text("image\ttext\na.png\tok\nb.png with no tab\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{manifest}:3: expected 'image<TAB>text'")):
        read_pairs(manifest)


def test_unknown_file_type_and_missing_path_are_refused(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("a.png,text\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{csv}: not a folder, .jsonl or .tsv manifest")):
        read_pairs(csv)
    with pytest.raises(DataError, match="not a folder"):
        read_pairs(tmp_path / "does-not-exist.jsonl")


@pytest.mark.parametrize("name,content", [("m.jsonl", ""), ("m.jsonl", "\n  \n"), ("m.tsv", "image\ttext\n")])
def test_empty_manifest_is_refused(tmp_path, name, content):
    manifest = tmp_path / name
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{manifest}: no image-text pairs found")):
        read_pairs(manifest)


def test_folder_without_pairs_is_refused(tmp_path):
    _png(tmp_path / "lonely.png")
    with pytest.raises(DataError, match="no image-text pairs found"):
        read_pairs(tmp_path)


# --- ResumableSampler -----------------------------------------------------------------------------

def test_two_ranks_split_each_global_batch_disjointly():
    size, gb = 37, 8
    ranks = [ResumableSampler(size, gb, rank=r, world=2, seed=5) for r in range(2)]
    reference = ResumableSampler(size, gb, rank=0, world=1, seed=5)
    assert ranks[0].per_rank == ranks[1].per_rank == 4
    for _ in range(2 * reference.batches_per_epoch):  # two epochs
        (e0, i0), (e1, i1) = ranks[0].next_indices(), ranks[1].next_indices()
        e_ref, i_ref = reference.next_indices()
        assert e0 == e1 == e_ref
        assert len(i0) == len(i1) == 4
        assert not set(i0) & set(i1)
        assert i0 + i1 == i_ref  # rank r reads slice r of the global batch
    # the reference is exactly the epoch permutation cut into global batches
    assert ResumableSampler(size, gb, seed=5).next_indices()[1] == reference._order(0)[:gb].tolist()


def test_one_epoch_sees_each_index_at_most_once_then_rolls_over():
    size, gb = 21, 4
    s = ResumableSampler(size, gb, seed=3)
    assert s.batches_per_epoch == 5
    epochs, seen = [], []
    for _ in range(s.batches_per_epoch):
        epoch, idx = s.next_indices()
        epochs.append(epoch)
        seen += idx
    assert epochs == [0] * 5
    assert len(seen) == s.batches_per_epoch * gb == 20
    assert len(set(seen)) == 20  # no repeats
    assert set(seen) <= set(range(size))
    assert dataclasses.asdict(s.state) == {"epoch": 1, "batch": 0}
    nxt = []
    for _ in range(s.batches_per_epoch):
        epoch, idx = s.next_indices()
        assert epoch == 1
        nxt += idx
    assert len(set(nxt)) == 20
    assert nxt != seen  # the next epoch is shuffled differently
    assert s.next_indices()[0] == 2


def test_same_seed_same_sequence_different_seed_different():
    def run(seed):
        s = ResumableSampler(50, 10, seed=seed)
        return [s.next_indices() for _ in range(12)]

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert [e for e, _ in a] == [0] * 5 + [1] * 5 + [2] * 2
    assert [i for _, i in a] != [i for _, i in c]


@pytest.mark.parametrize("steps_before", [0, 3, 5, 7])
def test_copying_state_into_a_fresh_sampler_resumes_the_same_sequence(steps_before):
    original = ResumableSampler(30, 6, rank=1, world=2, seed=11)
    for _ in range(steps_before):
        original.next_indices()
    fresh = ResumableSampler(30, 6, rank=1, world=2, seed=11)
    fresh.state = dataclasses.replace(original.state)  # a copy, as a checkpoint restores it
    assert fresh.state is not original.state
    expected = [original.next_indices() for _ in range(8)]
    assert [fresh.next_indices() for _ in range(8)] == expected
    # the way train.py restores it (field by field, from JSON) gives the same result
    other = ResumableSampler(30, 6, rank=1, world=2, seed=11)
    for _ in range(steps_before):
        other.next_indices()
    saved = json.loads(json.dumps(dataclasses.asdict(other.state)))
    third = ResumableSampler(30, 6, rank=1, world=2, seed=11)
    third.state.epoch, third.state.batch = saved["epoch"], saved["batch"]
    assert [third.next_indices() for _ in range(8)] == expected


def test_data_set_smaller_than_one_global_batch_is_refused():
    with pytest.raises(DataError, match="5 pairs, fewer than one global batch of 8"):
        ResumableSampler(5, 8)
    assert ResumableSampler(8, 8).batches_per_epoch == 1  # exactly one batch is fine


# --- Augment --------------------------------------------------------------------------------------

def test_augment_is_replayable_from_the_generator_seed():
    img = _colourful()
    aug = Augment(jitter_p=1.0, grayscale_p=0.0)
    a = aug(img.clone(), torch.Generator().manual_seed(1))
    b = aug(img.clone(), torch.Generator().manual_seed(1))
    c = aug(img.clone(), torch.Generator().manual_seed(2))
    assert a.shape == img.shape == (3, 8, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, img)


def test_augment_always_grey_gives_equal_channels():
    img = _colourful(seed=4)
    out = Augment(grayscale_p=1.0, jitter_p=0.0)(img, torch.Generator().manual_seed(0))
    assert _is_grey(out)
    assert not _is_grey(img)
    expected = (0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2])
    torch.testing.assert_close(out[0], expected, atol=1e-3, rtol=0)


def test_augment_with_nothing_enabled_leaves_the_image_unchanged():
    img = _colourful(seed=5)
    for seed in range(5):
        out = Augment(grayscale_p=0.0, jitter_p=0.0)(img.clone(), torch.Generator().manual_seed(seed))
        assert torch.equal(out, img)


def test_augment_output_stays_in_unit_range():
    aug = Augment(grayscale_p=0.5, jitter_p=1.0, brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    extremes = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), torch.full((8, 8), 0.5)])
    for seed in range(30):
        for img in (_colourful(seed), extremes):
            out = aug(img.clone(), torch.Generator().manual_seed(seed))
            assert out.shape == (3, 8, 8)
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # a slight overshoot (as from a resize) is clamped back even when nothing else happens
    stray = torch.tensor([-0.1, 0.5, 1.2]).repeat(3, 2, 1)
    out = Augment(grayscale_p=0.0, jitter_p=0.0)(stray, torch.Generator().manual_seed(0))
    assert out[:, 0, :].tolist() == [[0.0, 0.5, 1.0]] * 3


def test_greying_happens_at_the_configured_rate():
    aug = Augment(grayscale_p=0.2, jitter_p=0.0)
    img = _colourful(seed=6, size=4)
    g = torch.Generator().manual_seed(1234)
    greyed = sum(_is_grey(aug(img, g)) for _ in range(400))
    assert abs(greyed / 400 - 0.2) <= 0.06, greyed
    # and with per-item seeds (as PairDataset uses them)
    greyed = sum(_is_grey(aug(img, torch.Generator().manual_seed(s))) for s in range(400))
    assert abs(greyed / 400 - 0.2) <= 0.06, greyed


# --- PairDataset ----------------------------------------------------------------------------------

def _good(tmp_path: Path, n: int, size: int = 10) -> list[Pair]:
    return [Pair(_png(tmp_path / f"good{i}.png", noise_seed=i, size=size), f"good pair {i}") for i in range(n)]


def test_get_returns_a_square_tensor_in_unit_range_and_the_text(tmp_path):
    pairs = [Pair(_png(tmp_path / "wide.png", noise_seed=0, size=20), "a wide one")]
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (10, 30, 3), dtype=np.uint8)).save(tmp_path / "w.png")
    pairs.append(Pair(tmp_path / "w.png", "not square"))
    ds = PairDataset(pairs, image_size=16)
    assert len(ds) == 2
    for i, text in enumerate(["a wide one", "not square"]):
        img, t = ds.get(i, epoch=0)
        assert t == text
        assert img.shape == (3, 16, 16) and img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert float(img.std()) > 0.05  # real content, not a blank
    assert ds.skipped == Counter()


def test_bad_items_are_replaced_by_the_next_good_one_and_counted(tmp_path):
    good = _good(tmp_path, 3)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    full = _png(tmp_path / "full.png", noise_seed=9, size=64)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    pairs = [
        good[0],                                   # 0
        Pair(tmp_path / "missing.png", "gone"),    # 1 missing file
        Pair(corrupt, "random bytes"),             # 2 unreadable image
        Pair(truncated, "half a png"),             # 3 unreadable image
        Pair(good[1].image, "   "),                # 4 empty text
        good[1],                                   # 5
        good[2],                                   # 6
        Pair(tmp_path / "missing2.png", "gone"),   # 7 missing, wraps round to 0
    ]
    ds = PairDataset(pairs, image_size=8)
    reference = PairDataset([good[0], good[1]], image_size=8)
    img_g1, _ = reference.get(1, 0)
    img_g0, _ = reference.get(0, 0)
    for bad in (1, 2, 3, 4):
        for _ in range(2):  # deterministic: the same answer twice
            img, text = ds.get(bad, epoch=0)
            assert text == "good pair 1"
            assert torch.equal(img, img_g1)
    img, text = ds.get(7, epoch=0)
    assert text == "good pair 0" and torch.equal(img, img_g0)
    assert ds.skipped == Counter({"missing file": 2, "unreadable image": 2, "empty text": 1})
    # good items are still themselves, and nothing more is counted
    assert ds.get(6, 0)[1] == "good pair 2"
    assert ds.get(0, 0)[1] == "good pair 0"
    assert sum(ds.skipped.values()) == 5


def test_data_set_with_no_loadable_pair_is_refused(tmp_path):
    pairs = [Pair(tmp_path / "nope.png", "gone"), Pair(_png(tmp_path / "a.png"), "")]
    ds = PairDataset(pairs, image_size=8)
    with pytest.raises(DataError, match="no loadable image-text pair"):
        ds.get(0, epoch=0)
    assert ds.skipped == Counter({"missing file": 1, "empty text": 1})


def test_augmentation_is_deterministic_per_seed_epoch_and_index(tmp_path):
    pairs = _good(tmp_path, 2, size=12)
    aug = Augment(jitter_p=1.0, grayscale_p=0.0)
    ds = PairDataset(pairs, image_size=12, augment=aug, seed=3)
    plain = PairDataset(pairs, image_size=12)
    a, ta = ds.get(0, epoch=0)
    b, tb = ds.get(0, epoch=0)
    assert ta == tb == "good pair 0"
    assert torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, plain.get(0, 0)[0])  # it was augmented
    assert not torch.equal(a, ds.get(0, epoch=1)[0])  # a new epoch, a new augmentation
    # a fresh data set with the same seed replays it; another seed does not
    assert torch.equal(a, PairDataset(pairs, image_size=12, augment=aug, seed=3).get(0, 0)[0])
    assert not torch.equal(a, PairDataset(pairs, image_size=12, augment=aug, seed=4).get(0, 0)[0])


# --- batches --------------------------------------------------------------------------------------

def test_batches_yield_per_rank_batches_matching_the_sampler(tmp_path):
    pairs = _good(tmp_path, 12, size=10)
    ds = PairDataset(pairs, image_size=8, augment=Augment(), seed=1)
    stream = batches(ds, ResumableSampler(len(ds), 8, rank=1, world=2, seed=2), threads=2)
    mirror = ResumableSampler(len(ds), 8, rank=1, world=2, seed=2)
    for _ in range(3):
        pixels, texts = next(stream)
        epoch, indices = mirror.next_indices()
        assert pixels.shape == (4, 3, 8, 8) and pixels.dtype == torch.float32
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
        assert texts == [f"good pair {i}" for i in indices]
        for k, i in enumerate(indices):
            assert torch.equal(pixels[k], ds.get(i, epoch)[0])
    stream.close()


def test_two_fresh_streams_with_the_same_seed_are_identical(tmp_path):
    pairs = _good(tmp_path, 10, size=10)

    def first3(seed):
        ds = PairDataset(pairs, image_size=8, augment=Augment(), seed=seed)
        stream = batches(ds, ResumableSampler(len(ds), 4, seed=seed), threads=2)
        out = list(islice(stream, 3))
        stream.close()
        return out

    a, b, c = first3(0), first3(0), first3(1)
    assert len(a) == 3
    for (pa, ta), (pb, tb) in zip(a, b):
        assert pa.shape == (4, 3, 8, 8)
        assert ta == tb and len(ta) == 4
        assert torch.equal(pa, pb)
    assert [t for _, t in a] != [t for _, t in c]  # another seed, another order


# --- make_toy_pairs -------------------------------------------------------------------------------

TOY_TEXT = re.compile(r"(?:a|an) (\w+) (\w+) on the (\w+), on (\w+)")


def test_make_toy_pairs_writes_images_and_a_descriptive_manifest(tmp_path):
    manifest = make_toy_pairs(tmp_path / "toy", n=6, size=32, seed=0)
    assert manifest == tmp_path / "toy" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    assert len(lines) == 6
    assert len(list((tmp_path / "toy" / "images").glob("*.png"))) == 6
    for line in lines:
        row = json.loads(line)
        m = TOY_TEXT.fullmatch(row["text"])
        assert m, row["text"]
        colour, shape, pos, back = m.groups()
        assert row["text"].startswith("an " if colour[0] in "aeiou" else "a ")
        assert colour in COLOURS and shape in SHAPES and pos in POSITIONS and back in BACKDROPS
        with Image.open(tmp_path / "toy" / row["image"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
            # the shape's colour is really in the picture
            pixels = np.asarray(im).reshape(-1, 3).astype(int)
            assert (np.abs(pixels - np.array(COLOURS[colour])).sum(1) == 0).sum() >= 20
    pairs = read_pairs(manifest)
    assert len(pairs) == 6 and all(p.image.is_file() for p in pairs)
    assert PairDataset(pairs, image_size=16).get(0, 0)[0].shape == (3, 16, 16)


def test_make_toy_pairs_same_seed_gives_identical_files(tmp_path):
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    a = files(make_toy_pairs(tmp_path / "a", n=4, size=24, seed=7).parent)
    b = files(make_toy_pairs(tmp_path / "b", n=4, size=24, seed=7).parent)
    c = files(make_toy_pairs(tmp_path / "c", n=4, size=24, seed=8).parent)
    assert len(a) == 5  # 4 images and the manifest
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert a["manifest.jsonl"] != c["manifest.jsonl"]


def test_null_text_is_empty_and_bom_manifests_read(tmp_path):
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text('\ufeff{"image": "a.png", "text": null}\n{"image": "a.png", "text": "ok"}\n',
                                      encoding="utf-8")
    pairs = read_pairs(tmp_path / "m.jsonl")
    assert [p.text for p in pairs] == ["", "ok"]
    ds = PairDataset(pairs, 8)
    assert ds.get(0, 0)[1] == "ok" and ds.skipped == Counter({"empty text": 1})
    (tmp_path / "m.tsv").write_text("\ufeffimage\ttext\na.png\tgreen\n", encoding="utf-8")
    assert read_pairs(tmp_path / "m.tsv") == [Pair(tmp_path / "a.png", "green")]


def test_skip_reason_comes_from_the_failure_not_the_path(tmp_path):
    odd = tmp_path / "no such file"
    odd.mkdir()
    (odd / "empty text.png").write_bytes(b"garbage")
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    ds = PairDataset([Pair(odd / "empty text.png", "a"), Pair(tmp_path / "good.png", "b")], 8)
    ds.get(0, 0)
    assert ds.skipped == Counter({"unreadable image": 1})


def test_many_threads_count_each_bad_pair_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    pairs = [Pair(tmp_path / f"missing{i}.png", "x") for i in range(200)] + [Pair(tmp_path / "good.png", "y")]
    ds = PairDataset(pairs, 8)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ds.get(i, 0), range(200)))
    assert ds.skipped == Counter({"missing file": 200}) and len(ds.bad) == 200
