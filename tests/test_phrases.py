"""Phrase retrieval (viz.phrases): the index against brute force, stale detection, resumed builds, fonts,
UMAP layouts and the `brivl phrases` / `brivl figures fig5c` commands on the tiny model."""
import copy
import json

import numpy as np
import pytest
import torch

from brivl.cli import main
from brivl.viz import phrase_map as M
from brivl.viz import phrases as P

WORDS = ("sports football basketball tennis soccer golf hockey rugby swimming running cycling boxing skiing stadium "
         "athlete coach referee team league match champion trophy medal race training fitness gym automobile car "
         "truck bus taxi motorcycle bicycle engine wheel tire brake sedan highway road traffic driver garage fuel "
         "diesel electric battery apple banana orange grape lemon cherry mountain river forest ocean lake desert "
         "island valley beach cloud rain snow dog cat horse cow sheep bird fish lion tiger computer phone keyboard "
         "screen robot music piano guitar violin drum song doctor nurse hospital teacher school student library book "
         "kitchen bread rice noodle soup coffee tea milk city village street bridge tower castle market bank office "
         "salt sugar pepper butter cheese opera movie painting poem").split()


@pytest.fixture(scope="module")
def words():
    assert len(WORDS) == len(set(WORDS)) == 120
    return list(WORDS)


def test_read_phrases_jieba_default_and_files(tmp_path):
    jieba = P.read_phrases()
    assert len(jieba.phrases) == 349_045  # 349,046 lines; 'B超' is listed twice
    # Most frequent first (dict.txt's second column), not the file's character order (AT&T, B超, c#, 一, 丁, ...).
    assert jieba.phrases[:3] == ["了", "是", "在"] and "jieba" in jieba.source and "frequent" in jieba.source
    top = P.read_phrases("jieba", limit=5000).phrases
    assert top == jieba.phrases[:5000]
    assert {"运动", "体育", "比赛", "足球", "运动员", "汽车", "中国"} <= set(top)  # everyday words, not 七十多年 or CALL机
    assert not {"七十多年", "CALL机", "AT&T"} & set(top)
    f = tmp_path / "p.txt"
    f.write_text("\ufeffcat\n\n  dog \ncat\nbird\n", encoding="utf-8")
    plist = P.read_phrases(f)
    assert plist.phrases == ["cat", "dog", "bird"] and plist.sha256 == P.phrases_sha256(["cat", "dog", "bird"])
    with pytest.raises(P.PhraseIndexError, match="no such phrase file"):
        P.read_phrases(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(P.PhraseIndexError, match="no phrases"):
        P.read_phrases(tmp_path / "blank.txt")


def test_topk_equals_brute_force_float32(tiny, tmp_path, words):
    index = P.build_index(tiny, tmp_path / "idx", words, batch_size=16, shard_size=50, progress=False)
    assert index.embeddings.dtype == torch.float16 and index.embeddings.shape == (120, tiny.embed_dim)
    assert index.phrases == words  # row i is phrase i, in source order (built in length-sorted shards)
    queries = ["sports", "automobile", "a red fruit", "weather"]
    with torch.no_grad():
        full = tiny.encode_text(words).float()  # fresh float32 embeddings
        q = tiny.encode_text(queries).float()
    assert torch.allclose(index.embeddings.float(), full, atol=1e-3)
    scores, ids = P.topk_cosine(index.embeddings, q, k=10, chunk=7)  # many chunks
    # exact: the same ids and scores as a float32 brute force over the stored vectors
    ref = (q @ index.embeddings.float().T).topk(10, dim=1)
    assert torch.equal(ids, ref.indices) and torch.allclose(scores, ref.values, atol=1e-6)
    # and, up to float16 storage, the brute force over fresh float32 embeddings
    brute = (q @ full.T).topk(10, dim=1)
    assert torch.allclose(scores, brute.values, atol=2e-3)
    assert torch.allclose((q @ full.T).gather(1, ids), brute.values, atol=2e-3)
    hits = index.search(tiny, queries, k=10)
    assert [[p for p, _ in h] for h in hits] == [[words[i] for i in row] for row in ids.tolist()]
    assert hits[0][0][0] == "sports" and hits[0][0][1] == pytest.approx(1.0, abs=2e-3)  # the query itself is listed
    _, one_i = P.topk_cosine(index.embeddings, q[0], k=500)  # one query [d]; k clamps to n
    assert one_i.shape == (1, 120) and torch.equal(one_i[0, :10], ids[0])


def test_stale_index_is_detected_and_rebuilt(tiny, tmp_path, words):
    folder = tmp_path / "idx"
    first = P.build_index(tiny, folder, words, shard_size=64, progress=False)
    assert P.build_index(tiny, folder, words, shard_size=64).meta["build_seconds"] == first.meta["build_seconds"]
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        next(other.textencoder.parameters()).mul_(1.5)  # the backbone's token embeddings
    assert P.model_fingerprint(other) != P.model_fingerprint(tiny)
    with pytest.raises(P.StaleIndexError, match="another model"):
        P.PhraseIndex.open(folder, other)
    with pytest.raises(P.StaleIndexError):
        first.search(other, ["sports"])
    with pytest.warns(UserWarning, match=r"stale phrase index \(other model\)"):
        rebuilt = P.build_index(other, folder, words, shard_size=64, progress=False)
    assert rebuilt.meta["model_fingerprint"] == P.model_fingerprint(other)
    assert not torch.equal(rebuilt.embeddings, first.embeddings)
    assert P.PhraseIndex.open(folder, other).phrases == words
    # another phrase file -> rebuilt too
    f = tmp_path / "p.txt"
    f.write_text("\n".join(words[:30]))
    with pytest.warns(UserWarning, match=r"other phrases"):
        fewer = P.build_index(other, folder, f, shard_size=64, progress=False)
    assert len(fewer) == 30 and fewer.meta["source"] == str(f)


def test_fingerprint_follows_in_place_weight_changes(tiny):
    other = copy.deepcopy(tiny)
    before = P.model_fingerprint(other)
    assert P.model_fingerprint(other) == before  # cached and stable
    with torch.no_grad():
        next(other.textencoder.parameters())[0, 0] += 1.0
    assert P.model_fingerprint(other) != before
    with torch.no_grad():  # an image-tower change does not touch the text embeddings: same fingerprint
        other2 = copy.deepcopy(tiny)
        next(other2.imgencoder.parameters()).mul_(2)
    assert P.model_fingerprint(other2) == P.model_fingerprint(tiny)


def test_interrupted_build_resumes_only_missing_shards(tiny, tmp_path, words, monkeypatch):
    reference = P.build_index(tiny, tmp_path / "ref", words, batch_size=8, shard_size=25, progress=False)
    folder = tmp_path / "idx"
    seen = []

    def stop_after_shard_1(p):
        seen.append(p)
        if p.shard == 1:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        P.build_index(tiny, folder, words, batch_size=8, shard_size=25, progress=False, callback=stop_after_shard_1)
    assert [p.shard for p in seen] == [0, 1] and seen[0].shards == 5 and all(p.computed for p in seen)
    assert sorted(f.name for f in (folder / "shards").iterdir()) == ["shard-00000.safetensors",
                                                                    "shard-00001.safetensors"]
    with pytest.raises(P.PhraseIndexError, match="not finished"):
        P.PhraseIndex.open(folder, tiny)
    encoded = []
    original = tiny.encode_text
    monkeypatch.setattr(tiny, "encode_text", lambda texts: (encoded.extend(texts), original(texts))[1])
    progress = []
    index = P.build_index(tiny, folder, words, batch_size=8, shard_size=25, progress=False, callback=progress.append)
    assert [p.computed for p in progress] == [False, False, True, True, True]
    assert len(encoded) == 120 - 50  # only the three missing shards (25 + 25 + 20 phrases) were embedded
    by_length = sorted(range(120), key=lambda i: (len(words[i]), i))
    assert encoded == [words[i] for i in by_length[50:]]  # shards are runs of the length-sorted order
    assert torch.equal(index.embeddings, reference.embeddings) and index.phrases == reference.phrases
    assert not (folder / "shards").exists() and index.meta["complete"] and index.meta["computed"] == 70
    # The embedding time of all five shards, the two of the interrupted run included (kept in the shards' metadata).
    first_run = sum(p.seconds for p in seen)
    this_run = sum(p.seconds for p in progress if p.computed)
    assert index.meta["embed_seconds_all_runs"] == pytest.approx(first_run + this_run, abs=2e-3)
    assert index.meta["embed_seconds_all_runs"] > this_run > 0


def test_index_folder_refuses_foreign_files_and_bad_queries(tiny, tmp_path, words):
    (tmp_path / "mine.txt").write_text("not an index")
    with pytest.raises(P.PhraseIndexError, match="other files"):
        P.build_index(tiny, tmp_path, words, progress=False)
    with pytest.raises(P.PhraseIndexError, match="no phrase index"):
        P.PhraseIndex.open(tmp_path / "nothing")
    index = P.build_index(tiny, tmp_path / "idx", words[:10], progress=False)
    with pytest.raises(P.PhraseIndexError, match="dimension"):
        index.search_embeddings(torch.ones(1, 7))


def test_backbone_model_is_a_separate_text_model(tiny, tmp_path, words):
    from brivl.eval import TextBackboneModel

    bb = TextBackboneModel(tiny)
    assert not bb.training and not tiny.training
    emb = bb.encode_text(["sports", "a car"])
    assert emb.shape == (2, tiny.config.text.hidden_size) and torch.allclose(emb.norm(dim=-1), torch.ones(2))
    assert P.model_fingerprint(bb) != P.model_fingerprint(tiny)
    assert set(bb.state_dict()) == {f"backbone.{k}" for k in tiny.textencoder.backbone.state_dict()}
    index = P.build_index(bb, tmp_path / "bb", words[:20], progress=False)
    with pytest.raises(P.StaleIndexError):
        P.PhraseIndex.open(index.folder, tiny)
    assert not tiny.training and not tiny.textencoder.backbone.training  # the shared backbone stays in eval mode


def test_fonts_found_or_a_clear_fallback(tmp_path, monkeypatch):
    from brivl.viz import fonts

    font = fonts.find_cjk_font()
    if font is not None:  # an installed CJK font must really draw the probe characters
        assert fonts.covers(font, "运动汽车")
    maps = [[M.PhraseMap("m", "运动", ["足球", "汽车"], [0.9, 0.8], np.array([[0, 0], [1, 0], [0, 1]], np.float32),
                         {"method": "pca"})]]
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    with pytest.warns(UserWarning, match="fonts-noto-cjk"):
        info = M.draw_phrase_maps(maps, tmp_path / "map.png", english={"运动": "sports"})
    assert info["font"]["cjk"] is False and info["stand_in_labels"] and (tmp_path / "map.png").is_file()
    assert "DejaVu" in info["font"]["name"]
    assert fonts.covers(info["font"]["path"], "abc") and not fonts.covers(info["font"]["path"], "运动")


def test_pca_layout_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(31, 16, generator=g), dim=-1)
    a, settings = M.layout_2d(x, "pca")
    b, _ = M.layout_2d(x, "pca")
    assert a.shape == (31, 2) and np.array_equal(a, b) and settings == {"method": "pca"}


@pytest.mark.slow
def test_umap_layout_is_seeded():
    """UMAP's first call compiles (~15-30 s): the one test that pays it."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(31, 16, generator=g), dim=-1)
    a, settings = M.layout_2d(x, "umap", seed=3)
    b, _ = M.layout_2d(x, "umap", seed=3)
    c, _ = M.layout_2d(x, "umap", seed=4)
    assert a.shape == (31, 2) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert settings["method"] == "umap" and settings["random_state"] == 3 and settings["n_neighbors"] == 15


# --- the CLI on tiny -------------------------------------------------------------------------------------------

def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(code, err, command):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith(f"brivl {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def word_file(tmp_path, words):
    f = tmp_path / "words.txt"
    f.write_text("\n".join(words) + "\n")
    return f


def test_cli_phrases_build_and_query(capsys, tmp_path, word_file, monkeypatch):
    monkeypatch.setenv("BRIVL_CACHE", str(tmp_path / "cache"))
    code, out, err = _run(capsys, "phrases", "build", "tiny", "--phrases", word_file)
    assert code == 0, err
    assert "120 phrases x 32 (float16" in out and str(tmp_path / "cache" / "phrase-index") in out
    code, out, err = _run(capsys, "phrases", "query", "tiny", "sports", "car", "--phrases", word_file, "-k", "3",
                          "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert list(hits) == ["sports", "car"] and len(hits["car"]) == 3 and hits["sports"][0]["phrase"] == "sports"
    code, out, err = _run(capsys, "phrases", "query", "tiny", "sports", "--phrases", word_file, "-k", "5",
                          "--plot", tmp_path / "map.png", "--layout", "pca")
    assert code == 0, err
    assert "   1  +" in out and (tmp_path / "map.png").is_file()
    assert json.loads((tmp_path / "map.json").read_text())["panels"][0]["query"] == "sports"


def test_cli_phrases_bad_input(capsys, tmp_path, word_file):
    line = _one_error(*_run(capsys, "phrases", "build", "tiny", "--phrases", tmp_path / "no.txt")[::2], "phrases")
    assert "no such phrase file" in line
    line = _one_error(*_run(capsys, "phrases", "query", "tiny", "x", "--phrases", word_file, "--index",
                            tmp_path / "none")[::2], "phrases")
    assert "no phrase index" in line and "brivl phrases build" in line
    folder = tmp_path / "idx"
    assert _run(capsys, "phrases", "build", "tiny", "--phrases", word_file, "--index", folder, "--backbone")[0] == 0
    line = _one_error(*_run(capsys, "phrases", "query", "tiny", "x", "--phrases", word_file, "--index",
                            folder)[::2], "phrases")
    assert "stale index" in line
    assert "--limit" in _one_error(*_run(capsys, "phrases", "build", "tiny", "--limit", "0")[::2], "phrases")
    assert "query" in _one_error(*_run(capsys, "phrases", "query", "tiny", " ", "--phrases", word_file)[::2],
                                 "phrases")


def test_cli_fig5c_on_tiny(capsys, tmp_path, word_file):
    out = tmp_path / "fig"
    code, _, err = _run(capsys, "figures", "fig5c", "--model", "tiny", "--phrases", word_file, "--queries",
                             "sports", "automobile", "--index", tmp_path / "indexes", "--out", out, "--layout", "pca")
    assert code == 0, err
    info = json.loads((out / "fig5c.json").read_text())
    assert (out / "fig5c.png").is_file() and info["files"]["png"] == "fig5c.png"
    assert [(p["model"], p["query"]) for p in info["panels"]] == [
        ("tiny text backbone", "sports"), ("tiny", "sports"), ("tiny text backbone", "automobile"),
        ("tiny", "automobile")]
    assert all(len(p["top"]) == 30 and p["top"][0]["rank"] == 1 for p in info["panels"])
    assert info["font"]["path"] and info["layout"] == {"method": "pca"} and info["k"] == 30
    assert len({i["folder"] for i in info["indexes"]}) == 2  # one index per model, under --index
    assert all(i["folder"].startswith(str(tmp_path / "indexes")) for i in info["indexes"])
    line = _one_error(*_run(capsys, "figures", "fig5c", "--model", "nonexistent-model", "--out", out)[::2], "figures")
    assert "no model 'nonexistent-model'" in line
