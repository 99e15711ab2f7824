"""brivl-lite's structure term: general phrases keep the text backbone's neighbourhoods while class prompts move."""
import pytest
import torch
import torch.nn.functional as F

import brivl
from brivl.config import ConfigError
from recipes.brivl_lite import text_head as th
from recipes.brivl_lite.build import LiteBuildConfig
from recipes.brivl_lite.text_corpus import Text, anchor_phrases, chinese_phrases, english_words, word_starts


def test_structure_loss_vanishes_on_the_backbones_own_geometry_and_grows_without_it():
    g = torch.Generator().manual_seed(0)
    ref = F.normalize(torch.randn(12, 16, generator=g), dim=-1)
    others = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    same = th.structure_loss(ref, ref, others, others, 0.05, 0.05)
    assert abs(float(same)) < 1e-5
    scrambled = th.structure_loss(ref[torch.randperm(12, generator=g)], ref, others, others, 0.05, 0.05)
    assert float(scrambled) > 0.1
    # The anchor itself is left out: an anchor's nearest neighbour is never itself.
    assert float(th.structure_loss(ref, ref, others[:0], others[:0], 0.01, 0.01)) < 1e-5


def _tiny_setup(tmp_path):
    model = brivl.load("tiny")
    corpus = [Text(f"class {i % 4} text {i}", (i % 4,)) for i in range(32)]
    anchors = [f"general phrase {w}" for w in ("red", "blue", "green", "big", "small", "one", "two", "three", "dog",
                                               "cat", "car", "train", "sea", "hill", "sun", "moon")]
    th.cache_hidden_states(model, [t.text for t in corpus], tmp_path / "cache", batch=16, progress=False)
    th.cache_hidden_states(model, anchors, tmp_path / "anchors", batch=16, progress=False)
    targets = F.normalize(torch.randn(4, model.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    return (model, th.HiddenCache(tmp_path / "cache"), th.soft_labels(corpus, 4), targets,
            th.HiddenCache(tmp_path / "anchors"))


def _anchor_structure(model, anchors: th.HiddenCache) -> float:
    with torch.no_grad():
        hidden, mask = anchors.batch(torch.arange(len(anchors)))
        emb = model.textencoder.eval()(None, mask, hidden)
        ref = th.backbone_embeddings(hidden, mask)
        return float(th.structure_loss(emb, ref, emb[:0], ref[:0], 0.04, 0.01))


@pytest.mark.parametrize("weight", [0.0, 20.0])
def test_structure_term_holds_the_anchors_neighbourhoods(tmp_path, weight):
    model, cache, labels, targets, anchors = _tiny_setup(tmp_path)
    torch.manual_seed(0)
    start = {k: v.clone() for k, v in model.textencoder.learnable.state_dict().items()}
    # 100 steps pull the class texts onto their targets and, without the term, scatter the anchors (KL 0.05 -> 0.42)
    options = dict(steps=100, batch=16, lr=3e-3, warmup=2, temperature=0.1, cosine_weight=4.0, seed=0, progress=False,
                   save_every=100)
    th.train_text_head(model, cache, labels, targets, tmp_path / "plain", **options)
    plain = _anchor_structure(model, anchors)
    model.textencoder.learnable.load_state_dict(start)
    last = th.train_text_head(model, cache, labels, targets, tmp_path / f"held-{weight}", anchors=anchors,
                              anchor_batch=16, structure_weight=weight, structure_temperatures=(0.04, 0.01), **options)
    held = _anchor_structure(model, anchors)
    if weight == 0:
        assert held == pytest.approx(plain, abs=1e-6) and "structure" not in last  # no anchors drawn: same run
    else:
        assert "structure" in last and held < 0.1 * plain, (held, plain)
        with torch.no_grad():  # the class texts still learn their targets
            hidden, mask = cache.batch(torch.arange(len(cache)))
            emb = model.textencoder(None, mask, hidden)
        assert float((emb @ targets.T).argmax(-1).eq(labels.argmax(-1)).float().mean()) == 1.0


def test_anchor_phrases_are_everyday_words_outside_the_studios_phrase_list():
    from brivl.viz.phrases import read_phrases

    zh = chinese_phrases(300, skip=5000)
    assert len(zh) == 300 and not set(zh) & set(read_phrases("jieba", limit=5000).phrases)
    tokenizer = brivl.load("brivl-lite").tokenizer
    en = english_words(2000, word_starts(tokenizer))
    assert len(en) == 2000 and {"this", "happy", "night", "love"} <= set(en[:200])
    assert "ation" not in en and all(w.isascii() and w.isalpha() and len(w) >= 4 for w in en)
    both = anchor_phrases(tokenizer, 50, 50)
    assert both[:50] == chinese_phrases(50) and len(both) == len(set(both)) == 100


def test_build_config_refuses_bad_structure_options(tmp_path):
    path = tmp_path / "b.yaml"
    for bad, key in (("anchors_zh: -1", "anchors_zh"), ("anchor_batch: 1.5", "anchor_batch"),
                     ("structure_temperature: 0", "structure_temperature")):
        path.write_text(f"version: 2\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            LiteBuildConfig.load(path)
