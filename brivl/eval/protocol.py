"""The paper's unseen/seen split protocol for zero-shot image classification (Fig. 4a/b).

What the paper does (Results, "Remote Sensing Scene Classification"): datasets in zero-shot learning (ZSL) are
split into *unseen* and *seen* classes; a conventional ZSL model trains on the seen classes and is tested on the
unseen ones. BriVL needs no training, but the paper "still follow[s] the common practice and split[s] each dataset
with different unseen/seen class ratios (the seen classes are simply not used)". So a ratio ``U/S`` (written
unseen/seen, e.g. ``16/5`` on the 21 classes of UC Merced) means:

- U classes are drawn at random as the unseen classes, the other S are the seen classes (U + S = all classes);
- the seen classes are thrown away: their images are not tested and their names are not candidates;
- every image of an unseen class is classified among the U unseen class names only (conventional ZSL, not the
  generalised setting), and the accuracy is top-1 over those images;
- "Under the split settings where the number of seen classes are not zero, we randomly sample 25 splits and
  report the standard deviations in brackets along with average accuracy": mean (std) over 25 random splits.
  ``C/0`` (every class unseen) is the whole data set: one evaluation, no std ("evaluated over all data").

A ratio with no unseen class (``0/C``) tests nothing and is refused; ``1/S`` is refused too (one candidate class
is always right). Splits come from a NumPy generator seeded with (seed, U, S), so one ratio's splits do not depend
on which other ratios are asked for. The splits of one ratio are distinct; when a ratio has no more than
`n_splits` distinct splits (few classes), all of them are used once, in a seeded order. Std is NumPy's default
population std (ddof=0) over the splits.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..errors import SplitError  # noqa: F401 - re-exported: the names callers know

DEFAULT_SPLITS = 25  # "we randomly sample 25 splits"


@dataclass(frozen=True)
class Ratio:
    """An unseen/seen class ratio, e.g. Ratio(16, 5) for 16 unseen and 5 seen of 21 classes."""

    unseen: int
    seen: int

    def __str__(self) -> str:
        return f"{self.unseen}/{self.seen}"

    @property
    def classes(self) -> int:
        """Number of classes the ratio is meant for."""
        return self.unseen + self.seen


def parse_ratio(text: str, n_classes: int | None = None) -> Ratio:
    """Parse 'U/S' (unseen/seen), or 'all' for every class unseen; check it against n_classes when given."""
    text = str(text).strip()
    if text.lower() == "all":
        if n_classes is None:
            raise SplitError("'all' needs the number of classes")
        return Ratio(n_classes, 0)
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if not match:
        raise SplitError(f"{text!r} is not an unseen/seen ratio: write it as U/S, e.g. 16/5 (16 unseen, 5 seen)")
    ratio = Ratio(int(match[1]), int(match[2]))
    if ratio.unseen < 2:
        raise SplitError(f"ratio {ratio}: the unseen classes are the ones tested; give at least 2 (U/S is unseen/seen, "
                         f"so every class unseen is {ratio.classes}/0)")
    if n_classes is not None and ratio.classes != n_classes:
        raise SplitError(f"ratio {ratio} is for {ratio.classes} classes, but the data set has {n_classes}")
    return ratio


def unseen_splits(n_classes: int, ratio: Ratio, n_splits: int = DEFAULT_SPLITS, seed: int = 0) -> list[np.ndarray]:
    """The unseen class indices of each split (sorted int arrays); the seen classes are the rest.

    C/0 gives the one split holding every class. Otherwise up to `n_splits` distinct random splits, reproducible
    from `seed`.
    """
    if ratio.classes != n_classes:
        raise SplitError(f"ratio {ratio} is for {ratio.classes} classes, but the data set has {n_classes}")
    if n_splits < 1:
        raise SplitError(f"the number of splits must be at least 1, got {n_splits}")
    if ratio.seen == 0:
        return [np.arange(n_classes)]
    rng = np.random.default_rng([seed, ratio.unseen, ratio.seen])
    total = math.comb(n_classes, ratio.unseen)
    if total <= n_splits:  # few classes: every distinct split once, in a seeded order

        every = [np.array(c) for c in combinations(range(n_classes), ratio.unseen)]
        return [every[i] for i in rng.permutation(len(every))]
    splits, seen_before = [], set()
    while len(splits) < n_splits:
        unseen = np.sort(rng.permutation(n_classes)[:ratio.unseen])
        key = tuple(unseen.tolist())
        if key not in seen_before:
            seen_before.add(key)
            splits.append(unseen)
    return splits


def seen_classes(n_classes: int, unseen: np.ndarray) -> np.ndarray:
    """The seen class indices of a split: every class not unseen."""
    return np.setdiff1d(np.arange(n_classes), unseen)
