"""Deterministic train/val/test split by paper, and its k-fold variant.

Every structure of a paper lands in the same split: the split is a function of a hash of the
record's paper id (``group_id``, the 64-bit hash of its ``group``), so no paper's text is seen in
two splits, and the assignment depends neither on record order nor on the machine.

**Fractions** (the default): a paper's hash, as a number in [0, 1), falls into the train, val or
test share of ``fractions``; the assignment does not depend on dataset size.

**K folds** (``num_folds=K``): the papers, ordered by their hash, are cut into ``K`` contiguous
blocks of equal size (within one paper); fold ``f``'s test split is block ``f``, so every paper
is tested in exactly one fold. Its val split is the share ``fractions[1]`` of the other papers
chosen by a second hash (the same papers in every fold where they are not tested), and its train
split is the rest.
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


def _unit_hash(papers: np.ndarray, salt: str) -> np.ndarray:
    """``[G]`` float in [0, 1): a hash of ``salt`` and each paper id."""
    return np.array([(stable_hash64(f"{salt}:{g}") % _BUCKETS) / _BUCKETS for g in papers])


def split_indices(
    group_ids: np.ndarray,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    num_folds: int | None = None,
    fold: int = 0,
) -> dict[str, np.ndarray]:
    """Positions of ``group_ids [N]`` (int64 paper ids) in each split, sorted ascending.

    Args:
        group_ids: ``[N]`` paper id of each item.
        fractions: train/val/test shares of the papers; with ``num_folds``, only the val share
            is used (of the papers outside the test fold).
        seed: seed of the split (salts the hashes).
        num_folds: ``K`` for the k-fold mode (module docstring); None for the fractions.
        fold: which fold's split, ``0 <= fold < num_folds``.
    """
    bounds = _check(fractions)
    unique, inverse = np.unique(np.asarray(group_ids, dtype=np.int64), return_inverse=True)
    if num_folds is None:
        split_of_unique = np.minimum(
            np.searchsorted(bounds, _unit_hash(unique, str(seed)), side="right"), 2
        )
    else:
        split_of_unique = _fold_splits(unique, fractions[1], seed, num_folds, fold)
    split_of_item = split_of_unique[inverse]
    return {name: np.flatnonzero(split_of_item == k) for k, name in enumerate(SPLITS)}


def fold_of_papers(papers: np.ndarray, seed: int, num_folds: int) -> np.ndarray:
    """``[G]`` fold index of each of the unique ``papers``: equal blocks of the hash order."""
    if num_folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {num_folds}")
    if len(papers) < num_folds:
        raise ValueError(f"{len(papers)} papers cannot fill {num_folds} folds")
    order = np.lexsort((papers, _unit_hash(papers, f"{seed}:fold")))
    fold = np.empty(len(papers), dtype=np.int64)
    fold[order] = np.arange(len(papers)) * num_folds // len(papers)
    return fold


def _fold_splits(
    papers: np.ndarray, val_share: float, seed: int, num_folds: int, fold: int
) -> np.ndarray:
    """``[G]`` split index (0 train, 1 val, 2 test) of each paper in fold ``fold``."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    in_test = fold_of_papers(papers, seed, num_folds) == fold
    in_val = _unit_hash(papers, f"{seed}:val") < val_share
    return np.where(in_test, 2, np.where(in_val, 1, 0))
