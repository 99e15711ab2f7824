"""The evaluation suite: multi-caption Recall@K, the unseen/seen split protocol, zero-shot image and text
classification on hand-built cases with known answers, markdown tables, and the `brivl eval` CLI on tiny."""
import json
from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from brivl.cli import main
from brivl.eval import (
    Ratio,
    SplitError,
    markdown_retrieval,
    markdown_textcls,
    markdown_zeroshot,
    parse_ratio,
    read_class_folders,
    read_labelled_texts,
    read_retrieval_set,
    recall_at_k,
    recall_at_k_multi,
    retrieval,
    seen_classes,
    text_classification,
    unseen_splits,
    zero_shot_classification,
)

# --- Recall@K with several captions per image ------------------------------------------------------------------


def test_recall_multi_caption_hand_counted():
    # images 0, 1, 2; captions 0,1 -> image 0; caption 2 -> image 1; captions 3,4 -> image 2
    sim = torch.tensor([[0.2, 0.9, 0.8, 0.1, 0.0],
                        [0.7, 0.6, 0.5, 0.9, 0.1],
                        [0.3, 0.2, 0.4, 0.1, 0.35]])
    owner = [0, 0, 1, 2, 2]
    r = recall_at_k_multi(sim, owner, ks=(1, 2, 5))
    # i2t: image 0's best caption (0.9) beats every other caption -> rank 0; image 1's only caption (0.5) is beaten
    # by 0.7, 0.6, 0.9 -> rank 3; image 2's best caption (0.35) is beaten by caption 2 (0.4) only -> rank 1
    assert r["i2t_R@1"] == pytest.approx(100 / 3)
    assert r["i2t_R@2"] == pytest.approx(200 / 3)
    assert r["i2t_R@5"] == pytest.approx(100.0)
    # t2i ranks of each caption's image: c0 2, c1 0, c2 1, c3 1 (0.1 ties with image 0's 0.1: ties do not count), c4 0
    assert r["t2i_R@1"] == pytest.approx(40.0)
    assert r["t2i_R@2"] == pytest.approx(80.0)
    assert r["t2i_R@5"] == pytest.approx(100.0)
    assert r["R@SUM"] == pytest.approx(100 / 3 + 200 / 3 + 100 + 40 + 80 + 100)


def test_recall_multi_with_one_caption_each_equals_recall_at_k():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(12, 12, generator=g)
    assert recall_at_k_multi(sim, list(range(12))) == pytest.approx(recall_at_k(sim))


def test_an_extra_wrong_caption_never_hurts_image_to_text():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    base = recall_at_k_multi(sim, [0, 1], ks=(1,))
    # image 0 gets a second caption that scores badly for it: i2t still finds its good one first
    more = recall_at_k_multi(torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1]]), [0, 1, 0], ks=(1,))
    assert more["i2t_R@1"] == base["i2t_R@1"] == 100.0
    assert more["t2i_R@1"] == pytest.approx(200 / 3)  # the bad caption's image ranks 2nd


def test_recall_multi_refuses_bad_shapes():
    with pytest.raises(ValueError, match="one image index per caption"):
        recall_at_k_multi(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="at least one caption"):
        recall_at_k_multi(torch.zeros(3, 2), [0, 1])


# --- the unseen/seen split protocol ----------------------------------------------------------------------------

def test_splits_are_seeded_disjoint_and_distinct():
    r = parse_ratio("16/5", 21)
    a = unseen_splits(21, r, 25, seed=3)
    b = unseen_splits(21, r, 25, seed=3)
    c = unseen_splits(21, r, 25, seed=4)
    assert len(a) == 25 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(u) for u in a}) == 25  # no split twice
    for u in a:
        s = seen_classes(21, u)
        assert len(u) == 16 and len(s) == 5
        assert not set(u) & set(s)  # a class is never both unseen and seen
        assert sorted(set(u) | set(s)) == list(range(21))


def test_all_unseen_is_one_split_and_few_classes_use_every_split_once():
    assert [u.tolist() for u in unseen_splits(21, parse_ratio("21/0", 21))] == [list(range(21))]
    assert parse_ratio("all", 7) == Ratio(7, 0)
    few = unseen_splits(4, Ratio(2, 2), 25, seed=0)  # only C(4,2) = 6 distinct splits
    assert sorted(tuple(u) for u in few) == list(combinations(range(4), 2))


@pytest.mark.parametrize("text,match", [("0/21", "at least 2"), ("1/20", "at least 2"), ("5/10", "21"),
                                        ("five", "U/S"), ("5-16", "U/S")])
def test_bad_ratios_are_refused(text, match):
    with pytest.raises(SplitError, match=match):
        parse_ratio(text, 21)


# --- a model with known answers --------------------------------------------------------------------------------

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "orange": (1.0, 0.5, 0.0)}


class ColourModel(torch.nn.Module):
    """Images embed as their mean RGB; texts as the colour they name (or a listed vector): answers are known."""

    image_size = 8
    embed_dim = 3

    def __init__(self, extra=None):
        super().__init__()
        self.vectors = {**COLOURS, **(extra or {})}

    def encode_text(self, texts):
        return F.normalize(torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32), dim=-1)

    def encode_image(self, pixels):
        return F.normalize(pixels.mean(dim=(2, 3)) + 1e-6, dim=-1)

    def feature_layers(self):
        return {}


def _png(path, rgb, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), tuple(int(255 * c) for c in rgb)).save(path)
    return path


@pytest.fixture
def colour_folders(tmp_path):
    """Classes red, green, blue, orange with 2 images each; the 'orange' images are pure red (a trap)."""
    root = tmp_path / "classes"
    for name, rgb in COLOURS.items():
        for i in range(2):
            _png(root / name / f"{i}.png", COLOURS["red"] if name == "orange" else rgb)
    return root


def test_zero_shot_protocol_on_known_answers(colour_folders):
    data = read_class_folders(colour_folders)
    assert data.names == ["blue", "green", "orange", "red"] and len(data.images) == 8
    res = zero_shot_classification(ColourModel(), data, ["4/0", "2/2"], n_splits=25, seed=1)
    whole, half = res["results"]
    # every class unseen: red, green, blue right; the orange images (red pixels) go to red -> 6 of 8
    assert whole["ratio"] == "4/0" and whole["splits"] == 1 and whole["std"] is None
    assert whole["mean"] == pytest.approx(75.0)
    # 2 unseen of 4: the orange images are wrong only when red is a candidate too (seen classes are left out)
    assert half["splits"] == 6  # C(4, 2) < 25: each distinct split once
    expected = [50.0 if {"orange", "red"} <= set(u) else 100.0 for u in half["unseen_classes"]]
    assert half["accuracies"] == pytest.approx(expected)
    assert half["mean"] == pytest.approx(np.mean(expected)) and half["std"] == pytest.approx(np.std(expected))
    table = markdown_zeroshot([("colours", res)])
    assert "| Method | 4/0 (unseen/seen) | 2/2 (unseen/seen) |" in table
    assert f"| colours | 75.00 | {np.mean(expected):.2f} ({np.std(expected):.2f}) |" in table


def test_class_name_mapping_and_empty_folders(colour_folders, tmp_path):
    (colour_folders / "empty").mkdir()
    mapping = tmp_path / "names.tsv"
    mapping.write_text("blue\tazure\n")
    with pytest.warns(UserWarning, match="hold no images"):
        data = read_class_folders(colour_folders, mapping)
    assert data.folders == ["blue", "green", "orange", "red"] and data.names == ["azure", "green", "orange", "red"]
    res = zero_shot_classification(ColourModel({"azure": (0.0, 0.0, 1.0)}), data)
    assert res["results"][0]["ratio"] == "4/0" and res["results"][0]["mean"] == pytest.approx(75.0)


def test_text_classification_on_known_answers(tmp_path):
    tsv = tmp_path / "news.tsv"
    tsv.write_text("text\tlabel\ncrimson\tr\nlime\tg\nnavy\tb\nscarlet\tr\n", encoding="utf-8")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"r": "red", "g": "green", "b": "blue"}))
    data = read_labelled_texts(tsv, names)
    model = ColourModel({"crimson": (1, 0, 0), "lime": (0, 1, 0), "navy": (0, 0, 1), "scarlet": (0, 1, 0)})
    res = text_classification(model, data)
    assert res["accuracy"] == pytest.approx(75.0) and res["n_texts"] == 4
    assert res["per_class"]["red"] == {"n": 2, "accuracy": 50.0}
    assert res["per_class"]["green"]["accuracy"] == 100.0
    table = markdown_textcls([("colours", "news", res)])
    assert "| Method | news |" in table and "| colours | 75.00 |" in table and "| red | 2 | 50.00 |" in table


def test_retrieval_with_several_captions_per_image(tmp_path):
    for name in ("red", "green", "blue"):
        _png(tmp_path / f"{name}.png", COLOURS[name])
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"image": "red.png", "captions": ["red", "green"]},  # a wrong second caption for the red image
        {"image": "green.png", "text": "green"},
        {"image": "blue.png", "caption": "blue"},
    ]) + "\n")
    data = read_retrieval_set(manifest)
    assert data.caption_image == [0, 0, 1, 2]
    res = retrieval(ColourModel(), data)
    assert res["i2t_R@1"] == 100.0  # each image's best caption is its own
    assert res["t2i_R@1"] == pytest.approx(75.0)  # the caption "green" of the red image finds the green one first
    assert res["n_images"] == 3 and res["n_captions"] == 4
    assert "| colours | 100.00 | 100.00 | 100.00 | 75.00 | 100.00 | 100.00 | 575.00 |" in \
        markdown_retrieval([("colours", res)])


def test_tsv_manifest_rows_of_one_image_merge(tmp_path):
    _png(tmp_path / "a.png", COLOURS["red"])
    _png(tmp_path / "b.png", COLOURS["blue"])
    tsv = tmp_path / "m.tsv"
    tsv.write_text("image\tcaption\na.png\tred\nb.png\tblue\na.png\tcrimson\n")
    data = read_retrieval_set(tsv)
    assert [p.name for p in data.images] == ["a.png", "b.png"] and data.caption_image == [0, 1, 0]


# --- the CLI on tiny -------------------------------------------------------------------------------------------

def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(code, err, command="eval"):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"brivl {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_zeroshot_end_to_end_on_tiny(capsys, tmp_path, colour_folders):
    out, md = tmp_path / "res.json", tmp_path / "table.md"
    code, stdout, err = _run(capsys, "eval", "zeroshot", "tiny", colour_folders, "--ratios", "4/0", "3/1",
                             "--splits", "3", "--template", "a photo of {}", "-o", out, "--markdown", md)
    assert code == 0, err
    assert "| Method | 4/0 (unseen/seen) | 3/1 (unseen/seen) |" in stdout
    res = json.loads(out.read_text())
    assert res["method"] == "tiny" and [r["splits"] for r in res["results"]] == [1, 3]
    assert res["templates"] == ["a photo of {}"] and md.read_text() == res["markdown"]


def test_cli_textcls_and_retrieval_on_tiny(capsys, tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a red apple\tfruit\na fast car\tcar\nsome bread\tfood\n")
    code, stdout, err = _run(capsys, "eval", "textcls", "tiny", tsv, "--name", "tiny-bert")
    assert code == 0, err
    assert "| tiny-bert |" in stdout and "Per category (t)" in stdout
    code, stdout, err = _run(capsys, "eval", "textcls", "tiny", tsv, "--backbone")
    assert code == 0 and "| tiny (text backbone) |" in stdout, err
    for i, name in enumerate(("red", "green")):
        _png(tmp_path / f"{name}.png", COLOURS[name], size=16)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "red.png", "captions": ["a red square", "red"]}\n'
                        '{"image": "green.png", "text": "a green square"}\n')
    code, stdout, err = _run(capsys, "eval", "retrieval", "tiny", manifest, "-o", tmp_path / "r.json")
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["n_images"] == 2 and res["n_captions"] == 3 and 0 <= res["R@SUM"] <= 600
    assert "Recall@SUM" in stdout


def test_cli_bad_input_exits_2_with_one_line(capsys, tmp_path):
    line = _one_error(*_run(capsys, "eval", "zeroshot", "tiny", tmp_path / "nowhere")[::2])
    assert "no such folder" in line
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert "no 'text<TAB>label' rows" in _one_error(*_run(capsys, "eval", "textcls", "tiny", empty)[::2])
    one = tmp_path / "one.tsv"
    one.write_text("just text without a tab\n")
    assert "expected 'text<TAB>label'" in _one_error(*_run(capsys, "eval", "textcls", "tiny", one)[::2])
    (tmp_path / "c" / "a").mkdir(parents=True)
    _png(tmp_path / "c" / "a" / "x.png", COLOURS["red"])
    _png(tmp_path / "c" / "b" / "x.png", COLOURS["blue"])
    line = _one_error(*_run(capsys, "eval", "zeroshot", "tiny", tmp_path / "c", "--ratios", "0/2")[::2])
    assert "at least 2" in line
    line = _one_error(*_run(capsys, "eval", "zeroshot", "tiny", tmp_path / "c", "--template", "no slot")[::2])
    assert "'{}'" in line
    assert "no such manifest" in _one_error(*_run(capsys, "eval", "retrieval", "tiny", tmp_path / "m.jsonl")[::2])
