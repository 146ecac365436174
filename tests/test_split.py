"""The split by paper: deterministic, fractions respected, no paper in two splits."""

from __future__ import annotations

import numpy as np
import pytest

from clasp_pl.data.records import paper_group, stable_hash64
from clasp_pl.data.split import split_indices


def test_no_group_crosses_splits_and_fractions_hold():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3000, size=20000)  # many papers with several structures
    parts = split_indices(groups, (0.8, 0.1, 0.1), seed=3)
    seen = [set(groups[idx].tolist()) for idx in parts.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(idx) for idx in parts.values()) == len(groups)
    papers = [len(s) / 3000 for s in seen]
    assert papers == pytest.approx([0.8, 0.1, 0.1], abs=0.03)


def test_split_is_deterministic_and_order_independent():
    groups = np.array([stable_hash64(paper_group(None, f"paper {i}", str(i))) for i in range(500)])
    a = split_indices(groups)
    order = np.random.default_rng(1).permutation(len(groups))
    b = split_indices(groups[order])
    for name in a:
        assert set(groups[a[name]].tolist()) == set(groups[order][b[name]].tolist())
    assert split_indices(groups, seed=1)["test"].tolist() != a["test"].tolist()


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum"):
        split_indices(np.arange(3), (0.5, 0.5, 0.5))


def test_stable_hash_is_fixed():
    assert stable_hash64("doi:10.1/x") == stable_hash64("doi:10.1/x")
    assert stable_hash64("a") != stable_hash64("b")


def test_k_fold_tests_every_paper_exactly_once_and_folds_are_disjoint():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 700, size=3000)
    papers = np.unique(groups)
    tested = []
    for fold in range(5):
        parts = split_indices(groups, (0.9, 0.1, 0.0), seed=4, num_folds=5, fold=fold)
        seen = {name: set(groups[idx].tolist()) for name, idx in parts.items()}
        assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"])
        assert not seen["val"] & seen["test"]
        assert sum(len(idx) for idx in parts.values()) == len(groups)
        assert len(seen["val"]) == pytest.approx(0.1 * (len(papers) - len(seen["test"])), rel=0.3)
        assert len(seen["train"]) > 0.7 * len(papers)
        tested += sorted(seen["test"])
    assert sorted(tested) == papers.tolist()  # each paper in exactly one test fold
    sizes = [
        len(set(groups[split_indices(groups, num_folds=5, fold=f)["test"]].tolist()))
        for f in range(5)
    ]
    assert max(sizes) - min(sizes) <= 1


def test_k_fold_is_deterministic_and_seeded():
    groups = np.array([stable_hash64(f"paper {i}") for i in range(200)])
    order = np.random.default_rng(1).permutation(len(groups))
    a = split_indices(groups, num_folds=3, fold=1)
    b = split_indices(groups[order], num_folds=3, fold=1)
    assert set(groups[a["test"]].tolist()) == set(groups[order][b["test"]].tolist())
    assert split_indices(groups, seed=1, num_folds=3, fold=1)["test"].tolist() != a["test"].tolist()


def test_bad_folds_are_refused():
    with pytest.raises(ValueError, match="fold must be"):
        split_indices(np.arange(10), num_folds=3, fold=3)
    with pytest.raises(ValueError, match="at least 2"):
        split_indices(np.arange(10), num_folds=1)
