"""Tests for keyword labels, screening metrics and zero-shot keyword screening."""

from __future__ import annotations

import math

import pytest
import torch

from clasp_pl.evaluation.screening import (
    keyword_labels,
    keyword_scores,
    keyword_screening,
    screening_metrics,
)


def test_keyword_labels_word_start_case_insensitive() -> None:
    texts = [
        "Superconducting properties of a layered nickelate",
        "A non-superconductive phase",
        "nonsuperconducting compound",  # not at a word start
        "Magnetic order in FeO",
    ]
    labels = keyword_labels(texts, {"sc": ["superconduct"], "mag": ["magnet", "ferromagnet"]})
    assert labels["sc"].tolist() == [True, True, False, False]
    assert labels["mag"].tolist() == [False, False, False, True]
    assert labels["sc"].dtype == torch.bool


def test_screening_metrics_perfect_and_inverted() -> None:
    labels = torch.tensor([True, False, True, False, False])
    perfect = screening_metrics(torch.tensor([0.9, 0.1, 0.8, 0.2, 0.3]), labels, ks=(2, 10))
    assert perfect["precision@2"] == 1.0
    assert perfect["precision@10"] == pytest.approx(2 / 5)  # k clipped to N
    assert perfect["ap"] == 1.0 and perfect["roc_auc"] == 1.0
    assert perfect["n_positives"] == 2 and perfect["random_ap"] == pytest.approx(0.4)
    assert perfect["random_roc_auc"] == 0.5
    inverted = screening_metrics(torch.tensor([0.1, 0.9, 0.2, 0.8, 0.7]), labels, ks=(2,))
    assert inverted["precision@2"] == 0.0 and inverted["roc_auc"] == 0.0


def test_screening_metrics_ties_broken_by_index_and_single_class() -> None:
    m = screening_metrics(torch.zeros(4), torch.tensor([False, True, True, True]), ks=(1, 2))
    assert m["precision@1"] == 0.0 and m["precision@2"] == 0.5
    m = screening_metrics(torch.zeros(3), torch.ones(3, dtype=torch.bool))
    assert math.isnan(m["roc_auc"]) and m["ap"] == 1.0


def test_downsample_keeps_all_positives_and_is_seeded() -> None:
    labels = torch.zeros(100, dtype=torch.bool)
    labels[:5] = True
    scores = torch.rand(100, generator=torch.Generator().manual_seed(0))
    a = screening_metrics(scores, labels, downsample=True, seed=3)
    b = screening_metrics(scores, labels, downsample=True, seed=3)
    assert a == b
    assert a["n"] == 10 and a["n_positives"] == 5 and a["prevalence"] == 0.5


def test_keyword_screening_hand_made_embeddings() -> None:
    # Structures 0-2 point along x ("oxide"), 3-5 along y ("sulfide").
    structures = torch.tensor(
        [[2.0, 0.1], [1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.1, 3.0], [0.2, 1.0]]
    )
    prompts = {
        "oxide": torch.tensor([[1.0, 0.0], [-1.0, 0.0]]),  # max over variations
        "sulfide": torch.tensor([[0.0, 5.0]]),
        "rare": torch.tensor([[1.0, 1.0]]),
    }
    labels = {
        "oxide": torch.tensor([True, True, True, False, False, False]),
        "sulfide": torch.tensor([False, False, False, True, True, True]),
        "rare": torch.tensor([True, False, False, False, False, False]),
    }
    scores = keyword_scores(structures, prompts)
    result = keyword_screening(scores, labels, ks=(3,), min_positives=2)
    assert result.skipped == ["rare"]
    assert set(result.per_keyword) == {"oxide", "sulfide"}
    for metrics in result.per_keyword.values():
        assert metrics["precision@3"] == 1.0 and metrics["roc_auc"] == 1.0
    assert result.mean["ap"] == 1.0 and result.mean["random_ap"] == 0.5
    per_keyword, mean, skipped = result  # unpacks like a tuple
    assert mean is result.mean


def test_keyword_screening_max_over_prompts() -> None:
    structures = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    labels = {"k": torch.tensor([True, True, False])}
    one = keyword_scores(structures, {"k": torch.tensor([[1.0, 0.0]])})
    two = keyword_scores(structures, {"k": torch.tensor([[1.0, 0.0], [-1.0, 0.0]])})
    one_prompt = keyword_screening(one, labels, ks=(2,), min_positives=1)
    two_prompts = keyword_screening(two, labels, ks=(2,), min_positives=1)
    assert one_prompt.per_keyword["k"]["precision@2"] == 0.5
    assert two_prompts.per_keyword["k"]["precision@2"] == 1.0
