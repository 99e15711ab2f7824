"""Tokenizers: a built-in character-level one (no files needed) and local Hugging Face tokenizers."""
from __future__ import annotations

import string
import warnings
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .errors import RemoteCodeError, TokenizerMismatchError, TokenizerMissingError
from .hf import hf_tokenizer, refuse_remote_code
from .lite.assemble import package_tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


# A tokenizer that reaches fewer than this share of the embedding rows is almost surely the wrong one.
MIN_VOCAB_SHARE = 0.5


def _builtin_vocab() -> list[str]:
    return SPECIALS + list(_CHARS) + ["##" + c for c in _CHARS]


def builtin_vocab_size() -> int:
    """Vocabulary size of the built-in character tokenizer."""
    return len(_builtin_vocab())


def builtin_char_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing, BERT-style WordPiece tokenizer over single ASCII characters, built in memory."""
    vocab = {tok: i for i, tok in enumerate(_builtin_vocab())}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def load_tokenizer(source: str, folder: str | Path | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer for a model: built in, or read from local files only (never downloaded).

    Every path it may read is first checked for a named custom code (`auto_map`): brivl never runs it.
    """
    # source may be a path (--tokenizer) or a name such as builtin:chars; only paths are checked.
    refuse_remote_code(folder)
    if source and ":" not in source.split("/")[0]:
        refuse_remote_code(source)
    if source == "builtin:chars":
        return builtin_char_tokenizer()
    if folder is not None and Path(folder).is_dir() and (Path(folder) / "tokenizer.json").exists():
        return _load_local(Path(folder))
    if source.startswith("package:"):
        return package_tokenizer(source)
    for candidate in [folder, source]:
        if candidate and Path(candidate).exists():
            return _load_local(Path(candidate))
    raise TokenizerMissingError(
        f"no tokenizer files for this model (looked in {folder or '-'}); put the tokenizer of "
        f"{source or 'its text backbone'} (tokenizer.json, or vocab.txt) beside the weights, "
        f"or pass --tokenizer PATH to `brivl convert`")


def _load_local(path: Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a vocab.txt, a tokenizer.json, or a folder holding either (with or without a config)."""
    if path.is_file() and path.suffix == ".txt":  # a bare BERT vocab.txt, as the hfl models ship
        return bert_from_vocab(path)
    if path.is_file() and path.name == "tokenizer.json":
        path = path.parent
    if not path.is_dir():
        raise TokenizerMissingError(f"{path}: not a tokenizer; give a vocab.txt, a tokenizer.json or a folder of them")
    vocab = path / "vocab.txt"
    if not any((path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")):
        if not vocab.exists():
            raise TokenizerMissingError(f"{path} holds no tokenizer.json, tokenizer_config.json or vocab.txt")
        return bert_from_vocab(vocab)
    try:
        tok = hf_tokenizer(path)  # refuses a folder that names code (auto_map) before transformers reads it
    except RemoteCodeError:
        raise
    except (ValueError, OSError, KeyError) as e:
        # A config naming no class, or a class this install lacks, with no vocab.txt to fall back on.
        if not vocab.exists():
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TokenizerMissingError(f"{path}: its tokenizer files cannot be read ({first})") from None
        return bert_from_vocab(vocab)
    _set_bert_specials(tok)
    if vocab.exists():
        _check_against_vocab(tok, read_vocab(vocab), vocab)
    return tok


def read_vocab(path: Path) -> dict[str, int]:
    """A BERT vocab.txt as {token: id}: the id of a token is its line number (from 0), the first line winning."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerMissingError(f"{path}: cannot read it as a UTF-8 vocab.txt ({e})") from None
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.strip():  # a blank line keeps its number but names no token
            vocab.setdefault(line.rstrip("\r"), i)
    if not vocab:
        raise TokenizerMissingError(f"{path}: an empty vocab.txt")
    return vocab


def bert_from_vocab(path: Path) -> PreTrainedTokenizerBase:
    """A BERT WordPiece tokenizer (lower-casing, CJK characters split) over every line of a vocab.txt."""
    vocab = read_vocab(path)
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing:
        raise TokenizerMismatchError(f"{path}: not a BERT vocab.txt (no {', '.join(missing)} line)")
    # A dict, not vocab_file=: transformers 5 ignores vocab_file and builds a 5-entry vocabulary of specials alone.
    tok = BertTokenizer(vocab=vocab, do_lower_case=True)
    _check_against_vocab(tok, vocab, path)
    return tok


def _set_bert_specials(tok: PreTrainedTokenizerBase) -> None:
    """Name BERT's special tokens where the files left them unset (a bare tokenizer.json has no pad token)."""
    known = tok.get_vocab()
    for attr, token in (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"),
                        ("sep_token", "[SEP]"), ("mask_token", "[MASK]")):
        if getattr(tok, attr, None) is None and token in known:
            setattr(tok, attr, token)


def _check_against_vocab(tok: PreTrainedTokenizerBase, vocab: dict[str, int], source: Path) -> None:
    """Refuse a tokenizer that lost entries of its vocab.txt or numbers them differently."""
    if len(tok) < len(vocab):
        raise TokenizerMismatchError(f"{source}: the tokenizer read {len(tok)} entries of its {len(vocab)}; "
                                     f"the installed transformers did not read the vocabulary")
    ids = tok.convert_tokens_to_ids(list(vocab))
    wrong = [(t, i, vocab[t]) for t, i in zip(vocab, ids) if i != vocab[t]]
    if wrong:
        t, got, want = wrong[0]
        raise TokenizerMismatchError(f"{source}: the tokenizer gives {t!r} id {got}, its line says {want} "
                                     f"({len(wrong)} tokens differ)")


def check_fits(tok: PreTrainedTokenizerBase, rows: int, backbone: str = "") -> None:
    """Refuse a tokenizer with ids past the text backbone's embedding rows; warn when it uses few of them."""
    n = len(tok)
    name = backbone or "the text backbone"
    if n > rows:
        raise TokenizerMismatchError(f"the tokenizer has {n} ids but {name} has {rows} embedding rows: "
                                     f"it is not this model's tokenizer")
    if n < rows * MIN_VOCAB_SHARE:
        warnings.warn(f"the tokenizer has {n} ids but {name} has {rows} embedding rows: most rows can never be "
                      f"used; is it the backbone's own vocabulary?", stacklevel=3)
