"""Description queries ("a monoclinic sulfate"): built from labels, scored by AP and R@10."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from clasp_pl.evaluation.description_queries import (
    description_queries,
    query_text,
    random_expectation,
    ranking_ap_and_recall,
    score_queries,
    structure_labels,
)


def test_queries_cover_label_pairs_with_enough_structures():
    labels = [("monoclinic", "sulfates")] * 3 + [("cubic", "oxides")] * 2 + [None]
    labels += [("orthorhombic", "silicates")] * 4
    queries = description_queries(labels, min_relevant=3)
    assert [q.text for q in queries] == ["an orthorhombic silicate", "a monoclinic sulfate"]
    assert queries[1].relevant.tolist() == [True] * 3 + [False] * 7
    assert query_text("cubic", "elements") == "a cubic native element or alloy"


def test_labels_of_real_structures(real_records):
    labels = structure_labels(real_records[:20])
    assert all(label is None or len(label) == 2 for label in labels)
    assert any(label is not None for label in labels)


def test_ap_and_recall_of_a_hand_made_ranking():
    """Relevant at ranks 1, 3 and 12 of 12: AP = (1/1 + 2/3 + 3/12) / 3; R@10 = 2 / min(10, 3)."""
    relevant = torch.zeros(12, dtype=torch.bool)
    relevant[[0, 2, 11]] = True
    scores = -torch.arange(12.0)
    ap, recall = ranking_ap_and_recall(scores, relevant)
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 12) / 3)
    assert recall == pytest.approx(2 / 3)
    ties = torch.zeros(12)  # all tied: index order, the same ranking
    assert ranking_ap_and_recall(ties, relevant) == pytest.approx((ap, recall))


def test_random_expectation_equals_the_average_over_all_orders():
    """5 structures, 2 relevant: the mean over all 120 orders of AP and R@10."""
    relevant = torch.tensor([True, True, False, False, False])
    results = [
        ranking_ap_and_recall(-torch.tensor(order, dtype=torch.float64), relevant)
        for order in itertools.permutations(range(5))
    ]
    queries = description_queries([("cubic", "oxides")] * 2 + [None] * 3, min_relevant=2)
    expected = random_expectation(queries)
    assert expected.mean_ap == pytest.approx(np.mean([r[0] for r in results]))
    assert expected.mean_recall_at_10 == pytest.approx(1.0)  # the top 10 holds all 5
    scored = score_queries(torch.tensor([[5.0, 4, 3, 2, 1]]), queries)
    assert scored.mean_ap == 1.0 and scored.mean_recall_at_10 == 1.0
