"""Phrase retrieval (the paper's Fig. 5c): embed a phrase list once into an on-disk index, query it by cosine
(the 2-D maps and the figure are in `viz.phrase_map`).

The default phrase list is jieba's dictionary (`dict.txt` inside the jieba package: 349,046 lines, 349,045
distinct phrases; the paper's copy had 347,728), ranked by its frequency column so that "the first N" are the N
most frequent phrases. Any text file with one phrase per line works too (in its own order).

An index is a folder:

    meta.json                the fingerprint (model + phrases + shard size), counts, settings, `complete`
    phrases.txt              the phrases, one per line, in list order (row i of the matrix is line i)
    embeddings.safetensors   float16 [n, d], L2-normalised text embeddings, in the same order
    shards/                  only while building: float16 shards in length-sorted order, written atomically

The model fingerprint hashes the model's class, config and text-tower weights (see `model_fingerprint`); the
phrase fingerprint hashes the phrase list. An index whose fingerprint differs is stale: `build_index` rebuilds it,
`PhraseIndex.open(folder, model)` refuses it. Building sorts the phrases by length (less padding per batch), shows a
tqdm bar, reports each shard to a callback, and resumes after an interruption: finished shards are kept and
skipped, so only the missing ones are computed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from brivl.cache import cache_dir
from brivl.checkpoint import atomic_write_bytes, save_safetensors
from brivl.errors import UserInputError
from brivl.frozen import frozen
from brivl.progress import bar as progress_bar
from brivl.twotower import Described, TwoTower

FORMAT = "brivl-phrase-index/1"
JIEBA = "jieba"
META, PHRASES, MATRIX, SHARDS = "meta.json", "phrases.txt", "embeddings.safetensors", "shards"
DEFAULT_BATCH = 256
DEFAULT_SHARD = 16384


class PhraseIndexError(UserInputError):
    """A phrase list or index folder that cannot be used; the message says which and why."""


class StaleIndexError(PhraseIndexError):
    """An index built with another model or another phrase list."""


# --- phrase lists ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhraseList:
    """Phrases (distinct, in source order), where they came from, and their hash."""

    phrases: list[str]
    source: str
    sha256: str


def jieba_dict_path() -> Path:
    """jieba's dictionary file (word frequency tag per line) inside the installed package."""
    try:
        import jieba  # deferred: jieba's dictionary loads only when asked for
    except ImportError:
        raise PhraseIndexError("the default phrase list is jieba's dictionary, but jieba is not installed "
                               "(pip install jieba), or give a phrase file") from None
    path = Path(jieba.__file__).parent / "dict.txt"
    if not path.is_file():
        raise PhraseIndexError(f"{path}: jieba's dictionary is missing from the installed package")
    return path


def jieba_by_frequency(path: Path) -> list[str]:
    """jieba's phrases, most frequent first (dict.txt's second column; ties keep the file's order).

    The file itself is sorted by character, so its first N lines are words starting with 一, 丁, 七 and Latin
    ones; the N most frequent are a real sample of the language at any N.
    """
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        parts = line.split()
        if parts:
            freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            rows.append((-freq, i, parts[0]))
    rows.sort()
    return [word for _, _, word in rows]


def phrases_sha256(phrases: Sequence[str]) -> str:
    """Hash of a phrase list (order matters)."""
    return hashlib.sha256("\n".join(phrases).encode("utf-8")).hexdigest()


def read_phrases(source: str | Path | Sequence[str] | None = None, limit: int | None = None) -> PhraseList:
    """A phrase list: jieba's dictionary (None or 'jieba': its phrases, most frequent first), a file (one phrase per
    line, in its order), or a list.

    Blank lines are skipped and repeats dropped (first one kept); `limit` keeps the first N (for jieba: the N most
    frequent phrases).
    """
    if limit is not None and limit < 1:
        raise PhraseIndexError(f"--limit must be at least 1, got {limit}")
    if source is None or (isinstance(source, str) and source == JIEBA):
        path = jieba_dict_path()
        raw = jieba_by_frequency(path)
        try:
            label = f"jieba {version('jieba')} dict.txt, most frequent first"
        except PackageNotFoundError:
            label = f"jieba {path}, most frequent first"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise PhraseIndexError(f"{path}: no such phrase file (one phrase per line), and not 'jieba'")
        data = path.read_bytes()
        try:
            raw = [line.strip() for line in data.decode("utf-8-sig").splitlines()]
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise PhraseIndexError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); a phrase file is "
                                   f"UTF-8, one phrase per line") from None
        label = str(path)
    else:
        raw = [str(p).strip() for p in source]
        if any("\n" in p for p in raw):
            raise PhraseIndexError("a phrase holds a line break; phrases are single lines")
        label = "list"
    phrases = list(dict.fromkeys(p for p in raw if p))
    if limit is not None:
        phrases = phrases[:limit]
    if not phrases:
        raise PhraseIndexError(f"{label}: no phrases (the list is empty or only blank lines)")
    return PhraseList(phrases, label, phrases_sha256(phrases))


# --- model fingerprints ----------------------------------------------------------------------------------------

_FINGERPRINTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _hash_state(module: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key, value in module.state_dict().items():
        h.update(key.encode() + str(tuple(value.shape)).encode() + str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: TwoTower) -> str:
    """A hash of what decides a model's text embeddings: class, config, tokenizer and text-tower weights.

    A model may describe itself with `fingerprint_parts()`; the weights hashed are `model.textencoder`'s when it has
    one (BriVL), else the whole module's, unless the parts already hold `text_weights`. Cached per model object
    until any of its tensors changes (their in-place version counters and storages are part of the cache key).
    """
    tensors = list(itertools.chain(model.parameters(), model.buffers())) if isinstance(model, nn.Module) else []
    version = tuple((t.data_ptr(), t._version) for t in tensors)
    if isinstance(model, nn.Module) and model in _FINGERPRINTS and _FINGERPRINTS[model][0] == version:
        return _FINGERPRINTS[model][1]
    parts: dict = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    if isinstance(model, Described):
        parts.update(model.fingerprint_parts())
    else:
        cfg = getattr(model, "config", None)
        parts["config"] = cfg.to_dict() if hasattr(cfg, "to_dict") else repr(cfg)
    tok = getattr(model, "tokenizer", None) or getattr(getattr(model, "brivl", None), "tokenizer", None)
    if tok is not None:
        parts["tokenizer"] = [type(tok).__name__, len(tok) if hasattr(tok, "__len__") else None]
    if "text_weights" not in parts and isinstance(model, nn.Module):
        text = getattr(model, "textencoder", None)
        parts["text_weights"] = _hash_state(text if isinstance(text, nn.Module) else model)
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    if isinstance(model, nn.Module):
        _FINGERPRINTS[model] = (version, digest)
    return digest


def index_key(model_fp: str, phrases_sha: str, shard_size: int) -> str:
    """The fingerprint of an index: its model, its phrases and its shard size."""
    return hashlib.sha256(f"{FORMAT}|{model_fp}|{phrases_sha}|{shard_size}".encode()).hexdigest()


def default_index_root() -> Path:
    """Where indexes go unless told: $BRIVL_CACHE/phrase-index (default ~/.cache/brivl/phrase-index)."""
    return cache_dir() / "phrase-index"


def default_index_folder(model: TwoTower, phrases: PhraseList, root: str | Path | None = None,
                         shard_size: int = DEFAULT_SHARD) -> Path:
    """A folder named by the index fingerprint under root, so two models never share (or thrash) one folder."""
    key = index_key(model_fingerprint(model), phrases.sha256, shard_size)
    return Path(root or default_index_root()) / key[:16]


# --- the index -------------------------------------------------------------------------------------------------

@dataclass
class BuildProgress:
    """One finished shard: `computed` is False when it was already on disk (a resumed build); `seconds` is the
    time it took to embed (or, when read back, to read)."""

    shard: int
    shards: int
    done: int
    total: int
    computed: bool
    seconds: float


@dataclass
class PhraseIndex:
    """A phrase list and its float16 embedding matrix [n, d] (row i is phrases[i])."""

    folder: Path
    phrases: list[str]
    embeddings: Tensor
    meta: dict

    @classmethod
    def open(cls, folder: str | Path, model: TwoTower | None = None) -> "PhraseIndex":
        """Read a finished index; with a model, refuse it (StaleIndexError) unless it was built with that model."""
        folder = Path(folder)
        meta = _read_meta(folder)
        if meta is None:
            raise PhraseIndexError(f"{folder}: no phrase index here (no {META}); build one with `brivl phrases build`")
        if not meta.get("complete") or not (folder / MATRIX).is_file():
            raise PhraseIndexError(f"{folder}: the index was not finished; run the build again to complete it")
        if model is not None and meta.get("model_fingerprint") != model_fingerprint(model):
            raise StaleIndexError(f"{folder}: stale index: built with another model ({meta.get('model')}); "
                                  f"rebuild it with `brivl phrases build`")
        phrases = (folder / PHRASES).read_text(encoding="utf-8").split("\n")
        if phrases_sha256(phrases) != meta.get("phrases_sha256"):
            raise StaleIndexError(f"{folder}: {PHRASES} does not match the index's phrase fingerprint; rebuild it")

        emb = load_file(str(folder / MATRIX))["embeddings"]
        if emb.shape[0] != len(phrases):
            raise PhraseIndexError(f"{folder}: {emb.shape[0]} embeddings for {len(phrases)} phrases; rebuild it")
        return cls(folder, phrases, emb, meta)

    def __len__(self) -> int:
        return len(self.phrases)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    def to(self, device: str | torch.device) -> "PhraseIndex":
        """Move the matrix (float16) to a device, e.g. a GPU for fast queries."""
        self.embeddings = self.embeddings.to(device)
        return self

    def search_embeddings(self, queries: Tensor, k: int = 30, chunk: int = 65536) -> tuple[Tensor, Tensor]:
        """Top-k cosine scores and row indices [m, k] of query embeddings [m, d] (or [d])."""
        return topk_cosine(self.embeddings, queries, k, chunk)

    @torch.no_grad()
    def search(self, model: TwoTower, queries: str | Sequence[str], k: int = 30,
               chunk: int = 65536) -> list[list[tuple[str, float]]]:
        """Top-k (phrase, cosine) of each query text, best first; the model must be the one the index was built with."""
        if model_fingerprint(model) != self.meta.get("model_fingerprint"):
            raise StaleIndexError(f"{self.folder}: this index was built with another model ({self.meta.get('model')})")
        queries = [queries] if isinstance(queries, str) else list(queries)
        q = model.encode_text(queries).float()
        scores, ids = self.search_embeddings(q, k, chunk)
        return [[(self.phrases[i], s) for i, s in zip(row_i.tolist(), row_s.tolist())]
                for row_i, row_s in zip(ids, scores)]


def topk_cosine(matrix: Tensor, queries: Tensor, k: int = 30, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Top-k cosine scores and row indices [m, k] of unit query vectors [m, d] (or [d]) against a unit-row matrix.

    The product runs over row chunks in the matrix's own dtype (float16: no float32 copy of the matrix is made);
    each chunk's best 2k+32 candidates are then re-scored in float32, so scores and order are those of an exact
    float32 search over the stored vectors. Ties go to the lower row index.
    """
    d = matrix.shape[1]
    q = queries.reshape(-1, queries.shape[-1]).to(matrix.device)
    if q.shape[1] != d:
        raise PhraseIndexError(f"query dimension {q.shape[1]} does not match the index's {d}")
    n = matrix.shape[0]
    k = min(k, n)
    if k < 1:
        raise PhraseIndexError(f"k must be at least 1, got {k}")
    q_low, q32 = q.to(matrix.dtype), q.float()
    pool = 2 * k + 32
    candidates = []
    for start in range(0, n, chunk):
        block = matrix[start:start + chunk]
        scores = (block @ q_low.T).T  # [m, c], in the matrix's dtype
        candidates.append(scores.float().topk(min(pool, block.shape[0]), dim=1).indices + start)
    cand = torch.cat(candidates, 1)  # [m, P]
    exact = torch.einsum("md,mpd->mp", q32, matrix[cand].float())  # float32 re-scoring of the candidates
    order = torch.argsort(cand, dim=1)  # by row index, then (stable) by score: ties go to the lower index
    cand, exact = cand.gather(1, order), exact.gather(1, order)
    order = torch.argsort(-exact, dim=1, stable=True)[:, :k]
    return exact.gather(1, order).cpu(), cand.gather(1, order).cpu()


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_meta(folder: Path, meta: dict) -> None:
    atomic_write_bytes(folder / META, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _shard_path(folder: Path, s: int) -> Path:
    return folder / SHARDS / f"shard-{s:05d}.safetensors"


def _read_shard(path: Path, key: str, n: int) -> tuple[Tensor, float | None] | None:
    """A finished shard of this build and the seconds it took to embed, or None (absent, foreign, damaged)."""
    if not path.is_file():
        return None

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            emb = f.get_tensor("embeddings")
        seconds = float(meta["seconds"]) if "seconds" in meta else None
    except Exception:  # noqa: BLE001 - any unreadable shard is recomputed
        return None
    return (emb, seconds) if emb.shape[0] == n else None


def _clear(folder: Path) -> None:
    shutil.rmtree(folder / SHARDS, ignore_errors=True)
    for name in (MATRIX, PHRASES, META):
        (folder / name).unlink(missing_ok=True)


@torch.no_grad()
def build_index(model: TwoTower, folder: str | Path, phrases: PhraseList | str | Path | Sequence[str] | None = None,
                *, batch_size: int = DEFAULT_BATCH, shard_size: int = DEFAULT_SHARD, model_name: str | None = None,
                progress: bool | None = None, callback: Callable[[BuildProgress], None] | None = None,
                on_batch: Callable[[int, int], None] | None = None) -> PhraseIndex:
    """Embed a phrase list into an index folder, or reuse the finished index there if its fingerprint matches.

    A stale index (another model, phrase list or shard size) is deleted and rebuilt, with a warning. An unfinished
    build of the same fingerprint resumes: shards already written are read back, not recomputed. `callback`
    gets a BuildProgress after every shard, `on_batch(done, total)` the phrases done after every batch (raising in
    either stops the build; the shards written so far stay). `progress` as in brivl.progress.bar.
    """
    if batch_size < 1 or shard_size < 1:
        raise PhraseIndexError(f"batch and shard sizes must be at least 1, got {batch_size} and {shard_size}")
    plist = phrases if isinstance(phrases, PhraseList) else read_phrases(phrases)
    folder = Path(folder)
    model_fp = model_fingerprint(model)
    key = index_key(model_fp, plist.sha256, shard_size)
    meta = _read_meta(folder)
    if meta is not None and meta.get("key") == key and meta.get("complete") and (folder / MATRIX).is_file():
        return PhraseIndex.open(folder, model)
    if meta is not None and meta.get("key") != key:
        what = [w for w, same in (("model", meta.get("model_fingerprint") == model_fp),
                                  ("phrases", meta.get("phrases_sha256") == plist.sha256),
                                  ("shard size", meta.get("shard_size") == shard_size)) if not same]
        warnings.warn(f"{folder}: stale phrase index (other {', '.join(what) or 'format'}): rebuilding it",
                      stacklevel=2)
        _clear(folder)
    elif meta is None and folder.is_dir() and any(p.name not in (META, PHRASES, MATRIX, SHARDS)
                                                  and not p.name.startswith(".") for p in folder.iterdir()):
        raise PhraseIndexError(f"{folder}: the folder holds other files and no phrase index; give an empty or new "
                               f"folder")
    folder.mkdir(parents=True, exist_ok=True)
    texts = plist.phrases
    n = len(texts)
    order = sorted(range(n), key=lambda i: (len(texts[i]), i))  # by length: batches of similar lengths pad less
    shards = (n + shard_size - 1) // shard_size
    name = model_name or getattr(getattr(model, "config", None), "name", None) or getattr(model, "name", None) \
        or type(model).__name__
    meta = {"format": FORMAT, "key": key, "model": name, "model_fingerprint": model_fp, "source": plist.source,
            "phrases_sha256": plist.sha256, "count": n, "dim": None, "dtype": "float16", "shard_size": shard_size,
            "shards": shards, "batch_size": batch_size, "order": "source (built in length-sorted shards)",
            "complete": False, "torch": torch.__version__}
    atomic_write_bytes(folder / PHRASES, "\n".join(texts).encode("utf-8"))
    _write_meta(folder, meta)
    with frozen(model):  # dropout off while embedding; restored after
        matrix, computed, seconds, embed_all = _embed_shards(model, folder, texts, order, key, batch_size, shard_size,
                                                             progress, callback, on_batch)
    meta.update(dim=int(matrix.shape[1]), complete=True, build_seconds=round(seconds, 3), computed=computed,
                phrases_per_s=round(computed / seconds, 1) if computed and seconds > 0 else None,
                embed_seconds_all_runs=None if embed_all is None else round(embed_all, 3),
                bytes=(folder / MATRIX).stat().st_size)
    _write_meta(folder, meta)
    shutil.rmtree(folder / SHARDS, ignore_errors=True)
    return PhraseIndex(folder, list(texts), matrix, meta)


def _embed_shards(model: TwoTower, folder: Path, texts: list[str], order: list[int], key: str, batch_size: int,
                  shard_size: int, progress: bool | None,
                  callback: Callable[[BuildProgress], None] | None,
                  on_batch: Callable[[int, int], None] | None = None) -> tuple[Tensor, int, float, float | None]:
    """Embed (or read back) every shard, then write the matrix in source order.

    Returns the matrix, how many phrases this run embedded, this run's seconds, and the embedding seconds of every
    shard summed over all the runs that made them (None when a shard predates that record).
    """
    n = len(texts)
    shards = (n + shard_size - 1) // shard_size
    t0 = time.perf_counter()
    parts: list[Tensor] = []
    computed = 0
    embed_all: float | None = 0.0
    done = 0
    with progress_bar(total=n, progress=progress, desc="phrase index", unit="phrase", smoothing=0.1) as bar:
        for s in range(shards):
            rows = order[s * shard_size:(s + 1) * shard_size]
            path = _shard_path(folder, s)
            t_shard = time.perf_counter()
            found = _read_shard(path, key, len(rows))
            fresh = found is None
            if fresh:
                out = []
                for b in range(0, len(rows), batch_size):
                    batch = [texts[i] for i in rows[b:b + batch_size]]
                    out.append(model.encode_text(batch).detach().to("cpu", torch.float16))
                    bar.update(len(batch))
                    done += len(batch)
                    if on_batch is not None:
                        on_batch(done, n)
                emb = torch.cat(out)
                shard_s = time.perf_counter() - t_shard
                # The shard keeps its own embedding time, so a build resumed over several runs can report the total.
                save_safetensors({"embeddings": emb}, path,
                                 metadata={"key": key, "shard": str(s), "seconds": repr(shard_s)})
                computed += len(rows)
            else:
                emb, shard_s = found
                bar.update(len(rows))
                done += len(rows)
                if on_batch is not None:
                    on_batch(done, n)
            embed_all = None if embed_all is None or shard_s is None else embed_all + shard_s
            parts.append(emb)
            if callback is not None:
                callback(BuildProgress(s, shards, min((s + 1) * shard_size, n), n, fresh,
                                       shard_s if fresh else time.perf_counter() - t_shard))
    sorted_emb = torch.cat(parts)
    matrix = torch.empty_like(sorted_emb)
    matrix[torch.tensor(order)] = sorted_emb
    save_safetensors({"embeddings": matrix}, folder / MATRIX, metadata={"key": key})
    return matrix, computed, time.perf_counter() - t0, embed_all
