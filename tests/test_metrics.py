"""Tests for chunked retrieval metrics against hand-made cases and a full-matrix reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clasp_pl.evaluation.bootstrap import Interval, PaperResamples, recall_intervals
from clasp_pl.evaluation.ceiling import identical_caption_sizes, pair_recall_ceiling
from clasp_pl.evaluation.metrics import (
    bidirectional_metrics,
    bidirectional_ranks,
    group_sizes,
    random_expectation,
    retrieval_metrics,
    retrieval_ranks,
    summarise_bidirectional,
    summarise_ranks,
)


def full_matrix_ranks(
    query_emb: torch.Tensor,
    target_emb: torch.Tensor,
    query_groups: torch.Tensor,
    target_groups: torch.Tensor,
    pair_index: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive reference: full score matrix, stable descending sort, rank = position + 1."""
    scores = query_emb @ target_emb.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    rank = position + 1
    pair = rank.gather(1, pair_index[:, None]).squeeze(1)
    same = query_groups[:, None] == target_groups[None, :]
    same[torch.arange(len(pair_index)), pair_index] = True
    group = torch.where(same, rank, scores.shape[1] + 1).min(dim=1).values
    return pair, group


def integer_embeddings(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Small-integer embeddings: dot products are exact, so ties are exact in any order."""
    return torch.randint(-2, 3, (n, dim), generator=generator).double()


def test_hand_made_ranks_with_ties() -> None:
    # one query, 4 targets with scores [0.5, 0.9, 0.5, 0.1]
    target = torch.tensor([[0.5], [0.9], [0.5], [0.1]])
    query = torch.tensor([[1.0]])
    groups_q = torch.tensor([7])
    cases = {0: 2, 1: 1, 2: 3, 3: 4}  # partner index -> expected rank (tie: smaller index first)
    for partner, expected in cases.items():
        groups_t = torch.tensor([0, 1, 2, 3])
        pair, group = retrieval_ranks(query, target, groups_q, groups_t, torch.tensor([partner]))
        assert pair.item() == expected
        assert group.item() == expected  # no other target shares the group


def test_group_rank_uses_best_member_of_shared_paper() -> None:
    target = torch.tensor([[0.5], [0.9], [0.5], [0.1]])
    query = torch.tensor([[1.0], [1.0]])
    groups_t = torch.tensor([3, 4, 3, 3])
    groups_q = torch.tensor([3, 5])
    pair_index = torch.tensor([3, 2])
    pair, group = retrieval_ranks(query, target, groups_q, groups_t, pair_index)
    assert pair.tolist() == [4, 3]
    # query 0: targets 0, 2, 3 share its paper; the best is target 0 (rank 2).
    # query 1: group 5 has no target; only its partner counts.
    assert group.tolist() == [2, 3]
    m = retrieval_metrics(query, target, groups_q, groups_t, pair_index, ks=(1, 2))
    assert m["pair_R@2"] == 0.0 and m["group_R@2"] == 0.5
    assert m["pair_mean_rank"] == 3.5 and m["group_median_rank"] == 2.5
    assert m["group_mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_full_matrix_with_ties_and_groups(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(chunk_size)
    n, dim = 150, 3  # low dimension and integer values give many exact ties
    query = integer_embeddings(n, dim, gen)
    target = integer_embeddings(n, dim, gen)
    target[10:20] = target[0]  # duplicated targets
    query_groups = torch.randint(0, 40, (n,), generator=gen)
    target_groups = torch.randint(0, 40, (n,), generator=gen)
    pair_index = torch.randint(0, n, (n,), generator=gen)
    expected = full_matrix_ranks(query, target, query_groups, target_groups, pair_index)
    got = retrieval_ranks(query, target, query_groups, target_groups, pair_index, chunk_size)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])
    assert (got[1] <= got[0]).all()


def test_chunked_equals_full_matrix_random_float() -> None:
    gen = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen, dtype=torch.float64))
    target = torch.nn.functional.normalize(torch.randn(250, 16, generator=gen, dtype=torch.float64))
    query_groups = torch.randint(0, 60, (300,), generator=gen)
    target_groups = torch.randint(0, 60, (250,), generator=gen)
    pair_index = torch.randint(0, 250, (300,), generator=gen)
    expected = full_matrix_ranks(query, target, query_groups, target_groups, pair_index)
    got = retrieval_ranks(query, target, query_groups, target_groups, pair_index, chunk_size=33)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_extra_scores_are_added_per_chunk() -> None:
    query = torch.zeros(3, 2)
    target = torch.zeros(4, 2)
    bonus = torch.eye(3, 4)  # query i prefers target i
    groups = torch.arange(4)

    def extra(rows: slice) -> torch.Tensor:
        return bonus[rows]

    pair, _ = retrieval_ranks(query, target, groups[:3], groups, torch.arange(3), 2, extra)
    assert pair.tolist() == [1, 1, 1]
    pair, _ = retrieval_ranks(query, target, groups[:3], groups, torch.tensor([3, 3, 3]), 2, extra)
    assert pair.tolist() == [4, 4, 4]  # one bonus target ahead plus two tied, smaller index


def test_bidirectional_with_duplicated_texts() -> None:
    crystal = torch.eye(4)
    text = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    groups = torch.tensor([0, 0, 1, 2])  # items 0 and 1 share a paper and an identical text
    m = bidirectional_metrics(crystal, text, groups, ks=(1,))
    # s2t: structure 1 scores 0 against every text (orthogonal) -> pair rank 2 (tie, text 0
    # ahead), group rank 1 (text 0 of the same paper ties and is first).
    assert m["s2t_pair_R@1"] == 0.75 and m["s2t_group_R@1"] == 1.0
    # t2s: text 1 == text 0 -> ranks structure 0 first; its partner structure 1 is tied
    # with structures 2, 3 at score 0 -> rank 2; group rank 1 via structure 0.
    assert m["t2s_pair_R@1"] == 0.75 and m["t2s_group_R@1"] == 1.0
    assert set(m) >= {"t2s_pair_mrr", "s2t_group_median_rank", "t2s_group_mean_rank"}


def test_bidirectional_ranks_with_extra_scores_per_direction() -> None:
    """The ranks behind :func:`bidirectional_metrics` (one implementation for the callback
    and ``clasp eval``); each direction gets its own additive scores (the hybrid rows)."""
    gen = torch.Generator().manual_seed(0)
    crystal = torch.nn.functional.normalize(torch.randn(12, 4, generator=gen))
    text = torch.nn.functional.normalize(torch.randn(12, 4, generator=gen))
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 7])
    ranks = bidirectional_ranks(crystal, text, groups, chunk_size=5)
    assert summarise_bidirectional(ranks, (1, 5)) == bidirectional_metrics(
        crystal, text, groups, (1, 5), chunk_size=5
    )
    bonus = 10 * torch.eye(12)  # the partner always wins in t2s only
    boosted = bidirectional_ranks(crystal, text, groups, extra_t2s=lambda rows: bonus[rows])
    assert boosted["t2s"][0].tolist() == [1] * 12
    assert torch.equal(boosted["s2t"][0], ranks["s2t"][0])


def test_summarise_ranks() -> None:
    m = summarise_ranks(torch.tensor([1, 2, 10, 3]), ks=(1, 3), prefix="x_")
    assert m == pytest.approx(
        {
            "x_R@1": 0.25,
            "x_R@3": 0.75,
            "x_mean_rank": 4.0,
            "x_median_rank": 2.5,
            "x_mrr": (1 + 1 / 2 + 1 / 10 + 1 / 3) / 4,
        }
    )


def test_random_expectation_closed_forms() -> None:
    exp = random_expectation(100, torch.ones(100, dtype=torch.long), ks=(1, 5), prefixes=("",))
    assert exp["pair_R@5"] == pytest.approx(0.05)
    assert exp["pair_mean_rank"] == pytest.approx(50.5)
    assert exp["pair_median_rank"] == pytest.approx(50.5)
    assert exp["pair_mrr"] == pytest.approx(sum(1 / r for r in range(1, 101)) / 100)
    assert exp["group_R@5"] == pytest.approx(exp["pair_R@5"])
    exp = random_expectation(10, [3], ks=(2,), prefixes=("",))
    assert exp["group_R@2"] == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert exp["group_mean_rank"] == pytest.approx(11 / 4)


def test_random_expectation_matches_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(1)
    n = 60
    groups = torch.repeat_interleave(torch.arange(20), torch.tensor([1, 2, 3, 6] * 5))
    sums: dict[str, float] = {}
    trials = 200
    for _ in range(trials):
        crystal = torch.nn.functional.normalize(torch.randn(n, 8, generator=gen))
        text = torch.nn.functional.normalize(torch.randn(n, 8, generator=gen))
        for key, value in bidirectional_metrics(crystal, text, groups, ks=(1, 5)).items():
            sums[key] = sums.get(key, 0.0) + value / trials
    expected = random_expectation(n, group_sizes(groups), ks=(1, 5))
    assert set(expected) == set(sums) - {"t2s_group_median_rank", "s2t_group_median_rank"}
    for key, value in expected.items():
        assert sums[key] == pytest.approx(value, rel=0.1), key


def test_input_validation() -> None:
    emb = torch.zeros(2, 3)
    groups = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError):
        retrieval_metrics(emb, torch.zeros(2, 4), groups, groups, torch.arange(2))
    with pytest.raises(ValueError):
        retrieval_metrics(emb, emb, groups, groups, torch.tensor([0, 2]))


def test_paper_bootstrap_of_two_papers_matches_the_hand_computed_interval():
    """Papers A (2 hits of 2 pairs) and B (0 of 1). A resample draws two papers: AA (mean 1,
    p 1/4), AB or BA (2/3, p 1/2), BB (0, p 1/4). With 4000 resamples the 2.5% and 97.5%
    percentiles fall inside the BB and AA masses: the interval is [0, 1]; the 30%..70% one is
    [2/3, 2/3]."""
    hits = torch.tensor([1.0, 1.0, 0.0])
    resamples = PaperResamples(torch.tensor([7, 7, 3]), n_resamples=4000, seed=0)
    assert resamples.mean_interval(hits) == Interval(0.0, 1.0)
    assert resamples.mean_interval(hits, level=0.4) == pytest.approx((2 / 3, 2 / 3))
    means = [hits[torch.from_numpy(items)].mean().item() for items in resamples.item_indices()]
    share = {v: np.mean(np.isclose(means, v)) for v in (0.0, 2 / 3, 1.0)}
    assert share == pytest.approx({0.0: 0.25, 2 / 3: 0.5, 1.0: 0.25}, abs=0.03)


def test_paper_bootstrap_equals_an_independent_numpy_computation():
    """Same seed: numpy's draws of papers, the mean over the drawn papers' pairs, percentiles."""
    groups = torch.tensor([5, 5, 5, 9, 2, 2, 8, 8, 8, 8])
    ranks = torch.tensor([1, 3, 12, 2, 1, 7, 30, 1, 4, 9])
    resamples = PaperResamples(groups, n_resamples=500, seed=11)
    got = recall_intervals(ranks, resamples, (5,))["R@5"]
    papers = np.unique(groups.numpy())
    draws = np.random.default_rng(11).integers(0, len(papers), size=(500, len(papers)))
    means = []
    for draw in draws:
        rows = np.concatenate([np.flatnonzero(groups.numpy() == papers[p]) for p in draw])
        means.append(np.mean(ranks.numpy()[rows] <= 5))
    assert got == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    by_statistic = resamples.statistic_interval(lambda rows: np.mean(ranks.numpy()[rows] <= 5))
    assert by_statistic == pytest.approx(got)


def test_pair_ceiling_of_identical_captions():
    """Captions: one of 3 identical, one of 2, one alone. For k=1 each caption's block has one
    hit: (1 + 1 + 1) / 6; for k=2: (2 + 2 + 1) / 6; k=3: all."""
    captions = ["x", "x", "x", "y", "y", "z"]
    assert identical_caption_sizes(captions).tolist() == [3, 3, 3, 2, 2, 1]
    ceiling = pair_recall_ceiling(captions, (1, 2, 3))
    assert ceiling == pytest.approx({"pair_R@1": 3 / 6, "pair_R@2": 5 / 6, "pair_R@3": 1.0})


def test_the_ceiling_bounds_a_model_that_ranks_each_captions_structures_first():
    """Identical text embeddings for identical captions, structures next to their caption: the
    pair R@k reaches the ceiling and cannot pass it."""
    captions = ["x", "x", "x", "y", "y", "z"]
    caption_vec = {"x": [1.0, 0, 0], "y": [0, 1.0, 0], "z": [0, 0, 1.0]}
    text = torch.tensor([caption_vec[c] for c in captions])
    crystal = text + 0.01 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    crystal = torch.nn.functional.normalize(crystal, dim=-1)
    metrics = retrieval_metrics(
        text, crystal, torch.arange(6), torch.arange(6), torch.arange(6), ks=(1, 2)
    )
    ceiling = pair_recall_ceiling(captions, (1, 2))
    assert metrics["pair_R@1"] == pytest.approx(ceiling["pair_R@1"])
    assert metrics["pair_R@2"] == pytest.approx(ceiling["pair_R@2"])
