"""The texts brivl-lite's text head learns from: every ImageNet class named many ways, in English and Chinese.

Each text comes with the classes it names (one, or two for a text that names two things, whose target lies
between them). Sources: the WordNet synonyms and glosses timm ships, the Chinese names in `zh`, the
parallel templates of `zh` plus extra ones, and two-class sentences. The parallel (template, class)
sentences held out for the cross-lingual test (`heldout_sentence_pairs`) are never emitted.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from timm.data import ImageNetInfo

from brivl.config import ConfigError

from .recipe import heldout_sentence_pairs, sentence_pair
from .zh import PARALLEL_TEMPLATES, ZH_CLASS_SYNONYMS

EN_EXTRA = ("{}", "an image of a {}.", "a {} in the picture.", "a photo of the {}, seen up close.", "the {}.",
            "a painting of a {}.", "a cropped photo of a {}.", "a photo of many {}.", "a {} in the wild.",
            "art of a {}.", "a rendering of a {}.", "a photo of my {}.")
ZH_EXTRA = ("{}", "一个{}", "这是{}。", "{}的图片", "一幅{}的油画。", "很多{}", "一张关于{}的照片。", "真实的{}")
EN_SYNONYM_TEMPLATES = ("{}", "a photo of a {}.", "a picture of a {}.", "an image of a {}.")
ZH_SYNONYM_TEMPLATES = ("{}", "一张{}的照片。", "一幅{}的图片。", "图中有一个{}。")
EN_GLOSS_TEMPLATES = ("{}", "{name}: {}")
EN_PAIR_TEMPLATES = ("a {} and a {}", "a photo of a {} with a {}.", "a {} next to a {}.", "a {} on a {}.",
                     "a picture of a {} and a {}.", "a {} near a {}.")
ZH_PAIR_TEMPLATES = ("{}和{}", "一张{}和{}的照片。", "{}旁边的{}", "{}上的{}", "有{}和{}的图片")


@dataclass(frozen=True)
class Text:
    """A training text and the ImageNet classes it names."""

    text: str
    classes: tuple[int, ...]


def english_synonyms(descriptions: list[str], limit: int = 3) -> list[list[str]]:
    """The first `limit` WordNet synonyms of each class ("tench, Tinca tinca" -> ["tench", "Tinca tinca"])."""
    return [[s.strip() for s in d.split(",") if s.strip()][:limit] for d in descriptions]


def class_texts(cls: int, en_names: list[str], gloss: str, heldout: set[tuple[int, int]]) -> list[Text]:
    """Every single-class text of class `cls`, English and Chinese, minus the held-out parallel sentences."""
    out: list[Text] = []
    first, zh = en_names[0], ZH_CLASS_SYNONYMS[cls]
    for t, (en_t, zh_t) in enumerate(PARALLEL_TEMPLATES):
        if (t, cls) not in heldout:
            out += [Text(en_t.format(first), (cls,)), Text(zh_t.format(zh[0]), (cls,))]
    out += [Text(t.format(first), (cls,)) for t in EN_EXTRA]
    out += [Text(t.format(zh[0]), (cls,)) for t in ZH_EXTRA]
    out += [Text(t.format(name), (cls,)) for name in en_names[1:] for t in EN_SYNONYM_TEMPLATES]
    out += [Text(t.format(name), (cls,)) for name in zh[1:] for t in ZH_SYNONYM_TEMPLATES]
    if gloss:
        out += [Text(t.format(gloss, name=first), (cls,)) for t in EN_GLOSS_TEMPLATES]
    return out


def pair_texts(n: int, classes: list[int], en_first: list[str], seed: int) -> list[Text]:
    """n two-class sentences (half English, half Chinese) over random pairs of `classes`, seeded."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(classes, 2)
        if i % 2:
            out.append(Text(rng.choice(ZH_PAIR_TEMPLATES).format(ZH_CLASS_SYNONYMS[a][0], ZH_CLASS_SYNONYMS[b][0]),
                            (a, b)))
        else:
            out.append(Text(rng.choice(EN_PAIR_TEMPLATES).format(en_first[a], en_first[b]), (a, b)))
    return out


def build_corpus(classes: list[int] | None = None, pairs: int = 10000, seed: int = 0) -> list[Text]:
    """The whole training corpus (classes: a subset of the 1000 for small builds; None = all)."""
    info = ImageNetInfo()
    names = english_synonyms(list(info.label_descriptions()))
    glosses = [d.split(":", 1)[1].strip() if ":" in d else "" for d in info.label_descriptions(detailed=True)]
    heldout = set(heldout_sentence_pairs())
    chosen = list(range(1000)) if classes is None else list(classes)
    out = [t for c in chosen for t in class_texts(c, names[c], glosses[c], heldout)]
    if pairs and len(chosen) >= 2:
        out += pair_texts(pairs, chosen, [n[0] for n in names], seed)
    # Another template or name can spell a held-out sentence exactly ("a photo of a {}." with "large bustard"):
    # drop those too, so the cross-lingual test sees only unseen sentences.

    unseen = {s for t, c in heldout for s in sentence_pair(t, c)}
    return [t for t in out if t.text not in unseen]


def chinese_phrases(n: int, skip: int = 5000) -> list[str]:
    """jieba's phrases ranked skip .. skip + n by frequency: everyday Chinese that names no class on purpose.

    The `skip` most frequent are left out so that the studio's default phrase list (jieba's 5,000 most frequent)
    stays unseen by the build and tests what the head learned in general.
    """
    from brivl.viz.phrases import read_phrases

    return read_phrases("jieba", limit=skip + n).phrases[skip:]


def english_words(n: int, starts: set[str] | None = None, min_len: int = 4) -> list[str]:
    """The `n` most frequent whole English words of the BPE vocabulary open_clip ships (its merges, in rank order).

    A merge whose result ends a word ("</w>") is a word seen often enough in CLIP's English captions to get its own
    token, or a suffix ("ation"); `starts` (words that begin a word in another vocabulary) drops the suffixes. The
    e5 vocabulary alone would not do: it is multilingual and lists Indonesian beside English.
    """
    import gzip

    try:
        import open_clip
    except ImportError:
        raise ConfigError("anchors_en needs open_clip's English vocabulary: pip install open_clip_torch "
                          "(the [openclip] extra), or set anchors_en: 0") from None
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    out: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        next(f)  # the version line
        for line in f:
            word = line.strip().replace(" ", "")
            if word.endswith("</w>"):
                word = word[:-4]
                if (len(word) >= min_len and word.isascii() and word.isalpha() and word.islower()
                        and (starts is None or word in starts)):
                    out.append(word)
                    if len(out) == n:
                        break
    return out


def word_starts(tokenizer) -> set[str]:
    """The pieces of a sentencepiece tokenizer that begin a word ("\u2581word" -> "word")."""
    return {p[1:] for p in tokenizer.get_vocab() if p.startswith("\u2581")}


def anchor_phrases(tokenizer, zh: int, en: int, skip_zh: int = 5000) -> list[str]:
    """The general phrases the structure term holds in place: jieba phrases and English words, no repeats."""
    english = english_words(en, word_starts(tokenizer)) if en else []
    return list(dict.fromkeys(chinese_phrases(zh, skip_zh) + english))
