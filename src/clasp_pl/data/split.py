"""Deterministic train/val/test split by paper.

Every structure of a paper lands in the same split: the split is a function of a hash of the
record's paper id (``group_id``, the 64-bit hash of its ``group``), so no paper's text is seen in
two splits, and the assignment depends neither on record order, nor on dataset size, nor on the
machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clasp_pl.data.records import stable_hash64

SPLITS = ("train", "val", "test")
_BUCKETS = 1_000_003


def _check(fractions: Sequence[float]) -> np.ndarray:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    return np.cumsum(fractions)


def split_indices(
    group_ids: np.ndarray, fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0
) -> dict[str, np.ndarray]:
    """Positions of ``group_ids [N]`` (int64 paper ids) in each split, sorted ascending."""
    bounds = _check(fractions)
    unique, inverse = np.unique(np.asarray(group_ids, dtype=np.int64), return_inverse=True)
    unit = np.array([(stable_hash64(f"{seed}:{g}") % _BUCKETS) / _BUCKETS for g in unique])
    split_of_unique = np.minimum(np.searchsorted(bounds, unit, side="right"), 2)
    split_of_item = split_of_unique[inverse]
    return {name: np.flatnonzero(split_of_item == k) for k, name in enumerate(SPLITS)}
