"""Tokenizers: a built-in character-level one (no files needed) and local Hugging Face tokenizers."""
from __future__ import annotations

import string
from pathlib import Path

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


class TokenizerMissingError(FileNotFoundError):
    """No tokenizer files where a model needs them."""


def _builtin_vocab() -> list[str]:
    return SPECIALS + list(_CHARS) + ["##" + c for c in _CHARS]


def builtin_vocab_size() -> int:
    """Vocabulary size of the built-in character tokenizer."""
    return len(_builtin_vocab())


def builtin_char_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing, BERT-style WordPiece tokenizer over single ASCII characters, built in memory."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

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
    """Tokenizer for a model: built in, or read from local files only (never downloaded)."""
    if source == "builtin:chars":
        return builtin_char_tokenizer()
    if folder is not None and Path(folder).is_dir() and (Path(folder) / "tokenizer.json").exists():
        return _load_local(Path(folder))
    if source.startswith("package:"):
        from .lite.assemble import package_tokenizer

        return package_tokenizer(source)
    for candidate in [folder, source]:
        if candidate and Path(candidate).exists():
            return _load_local(Path(candidate))
    raise TokenizerMissingError(
        f"no tokenizer files for this model (looked in {folder or '-'}); put the tokenizer of "
        f"{source or 'its text backbone'} (tokenizer.json, or vocab.txt) beside the weights, "
        f"or pass --tokenizer PATH to `brivl convert`")


def _load_local(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer, BertTokenizerFast

    if path.is_file() and path.suffix == ".txt":  # a bare BERT vocab.txt, as the hfl models ship
        return BertTokenizerFast(vocab_file=str(path))
    if path.is_dir() and not any((path / n).exists() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise TokenizerMissingError(f"{path} holds no tokenizer.json, tokenizer_config.json or vocab.txt")
    if path.is_dir() and not (path / "tokenizer.json").exists() and (path / "vocab.txt").exists() \
            and not (path / "tokenizer_config.json").exists():
        return BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
