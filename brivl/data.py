"""Image-text pairs for training: manifests, the paper's augmentations and a deterministic, resumable sampler."""
from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from .errors import DataError  # noqa: F401 - re-exported: the names callers know
from .images import load_image
from .inputs import InputError, unicode_problem

log = logging.getLogger("brivl.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class _Unusable(Exception):
    """One pair that cannot be used, with the reason it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Pair:
    """One image file and its text."""

    image: Path
    text: str


def read_pairs(source: str | Path) -> list[Pair]:
    """Pairs from a JSONL manifest ({"image", "text"} per line), a TSV (image<TAB>text) or a folder of x.jpg + x.txt."""
    source = Path(source)
    if source.is_dir():
        pairs = [Pair(img, txt.read_text(encoding="utf-8", errors="replace").strip())
                 for img in sorted(source.rglob("*")) if img.suffix.lower() in IMAGE_SUFFIXES
                 and (txt := img.with_suffix(".txt")).is_file()]
    elif source.is_file() and source.suffix == ".jsonl":
        pairs = []
        for n, line in enumerate(_manifest_lines(source), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = row.get("text")
                text = row.get("caption") if text is None else text
                pairs.append(Pair(source.parent / row["image"], "" if text is None else str(text)))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{source}:{n}: expected a JSON object with 'image' and 'text' ({e})") from None
    elif source.is_file() and source.suffix in (".tsv", ".txt"):
        pairs = []
        for n, line in enumerate(_manifest_lines(source), 1):
            if not line.strip() or (n == 1 and line.lower().startswith("image\t")):
                continue
            if "\t" not in line:
                raise DataError(f"{source}:{n}: expected 'image<TAB>text'")
            image, text = line.split("\t", 1)
            pairs.append(Pair(source.parent / image, text))
    else:
        raise DataError(f"{source}: not a folder, .jsonl or .tsv manifest")
    if not pairs:
        raise DataError(f"{source}: no image-text pairs found")
    for pair in pairs:
        bad = unicode_problem(pair.text)
        if bad:  # a JSON "\ud800" escape: the tokenizer would fail mid-training with a TypeError
            raise DataError(f"{source}: the text of {pair.image.name} {bad}")
    return pairs


def _manifest_lines(source: Path) -> list[str]:
    """The lines of a UTF-8 manifest; any other encoding is a DataError naming the byte and line."""
    raw = source.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{source}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                        f"save the manifest as UTF-8") from None


@dataclass
class Augment:
    """The paper's augmentations: random greying and random colour jitter (then a square resize)."""

    grayscale_p: float = 0.2
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    # Not in the paper: a random square crop of this share range of the side, resized back (None = off).
    crop_scale: tuple[float, float] | None = None

    def __call__(self, img: Tensor, g: torch.Generator) -> Tensor:
        """Augment one [3, H, W] image in [0, 1] with randomness drawn only from g (thread-safe, replayable)."""
        u = lambda: float(torch.rand((), generator=g))  # noqa: E731
        if self.crop_scale is not None:
            img = self._crop(img, u)
        if u() < self.jitter_p:
            order = torch.randperm(4, generator=g).tolist()
            for op in order:
                if op == 0:
                    img = TF.adjust_brightness(img, 1 + self.brightness * (2 * u() - 1))
                elif op == 1:
                    img = TF.adjust_contrast(img, 1 + self.contrast * (2 * u() - 1))
                elif op == 2:
                    img = TF.adjust_saturation(img, 1 + self.saturation * (2 * u() - 1))
                else:
                    img = TF.adjust_hue(img, self.hue * (2 * u() - 1))
        if u() < self.grayscale_p:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        return img.clamp(0, 1)

    def _crop(self, img: Tensor, u) -> Tensor:
        lo, hi = self.crop_scale
        _, h, w = img.shape
        side = max(1, int(round(min(h, w) * (lo + (hi - lo) * u()))))
        top, left = int(u() * (h - side + 1)), int(u() * (w - side + 1))
        crop = img[None, :, top:top + side, left:left + side]
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


class PairDataset:
    """Decodes pairs into (pixels [3, S, S], text); bad items are replaced by the next good one and counted."""

    def __init__(self, pairs: list[Pair], image_size: int, augment: Augment | None = None, seed: int = 0):
        self.pairs, self.image_size, self.augment, self.seed = pairs, image_size, augment, seed
        self.skipped: Counter[str] = Counter()
        self.bad: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int, epoch: int) -> tuple[Tensor, str]:
        pair = self.pairs[index]
        if not pair.text.strip():
            raise _Unusable("empty text", "the text is empty")
        if not pair.image.is_file():
            raise _Unusable("missing file", f"{pair.image}: no such file")
        try:
            img = load_image(pair.image)
        except InputError as e:
            raise _Unusable("unreadable image", str(e)) from None
        img = F.interpolate(img[None], size=(self.image_size, self.image_size), mode="bilinear",
                            align_corners=False, antialias=True)[0].clamp(0, 1)
        if self.augment is not None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_000_007 + index)
            img = self.augment(img, g)
        return img, pair.text

    def get(self, index: int, epoch: int) -> tuple[Tensor, str]:
        """Item `index`, or the next loadable one after it (deterministically) if it cannot be read."""
        for probe in range(len(self.pairs)):
            i = (index + probe) % len(self.pairs)
            if i in self.bad:
                continue
            try:
                return self._load(i, epoch)
            except _Unusable as e:
                with self._lock:  # several loader threads may meet the same bad pair: count it once
                    if i in self.bad:
                        continue
                    self.bad.add(i)
                    self.skipped[e.reason] += 1
                log.warning("skipping pair %d (%s): %s", i, e.reason, e)
        raise DataError("no loadable image-text pair in the whole data set")


@dataclass
class SamplerState:
    """Where the sampler is: the epoch and the global batch within it."""

    epoch: int = 0
    batch: int = 0


class ResumableSampler:
    """A seeded permutation per epoch, cut into global batches; each process reads its own slice of each."""

    def __init__(self, size: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0):
        if not 0 <= rank < world or global_batch % world:
            raise DataError(f"rank {rank} of {world} processes with a global batch of {global_batch}: "
                            f"the batch must split evenly over the processes")
        if size < global_batch:
            raise DataError(f"the data set has {size} pairs, fewer than one global batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world, self.seed = size, global_batch, rank, world, seed
        self.per_rank = global_batch // world
        self.state = SamplerState()

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per epoch (the last partial batch is dropped)."""
        return self.size // self.global_batch

    def _order(self, epoch: int) -> Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def next_indices(self) -> tuple[int, list[int]]:
        """(epoch, this process's indices) of the next global batch; advances the state."""
        st = self.state
        start = st.batch * self.global_batch + self.rank * self.per_rank
        indices = self._order(st.epoch)[start:start + self.per_rank].tolist()
        epoch = st.epoch
        st.batch += 1
        if st.batch >= self.batches_per_epoch:
            st.epoch, st.batch = st.epoch + 1, 0
        return epoch, indices


def batches(dataset: PairDataset, sampler: ResumableSampler, threads: int = 2) -> Iterator[tuple[Tensor, list[str]]]:
    """Endless stream of (pixels [B, 3, S, S], texts) for this process, decoded on a small thread pool."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        while True:
            epoch, indices = sampler.next_indices()
            items = list(pool.map(lambda i: dataset.get(i, epoch), indices))
            yield torch.stack([im for im, _ in items]), [t for _, t in items]
