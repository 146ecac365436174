"""Keyword screening: zero-shot classification of structures by a text prompt.

A keyword (e.g. ``"superconductor"``) is given as a few variations (``"superconduct"``,
``"superconductivity"``...). The ground truth comes from each structure's own paper text; the
prediction is the cosine similarity between the structure embedding and the embeddings of the
keyword's prompts. Ranking all structures by that score and checking the top of the list is the
screening task.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor


class ScreeningResult(NamedTuple):
    """Output of :func:`keyword_screening`."""

    per_keyword: dict[str, dict[str, float]]
    """Metrics of every evaluated keyword (see :func:`screening_metrics`)."""
    mean: dict[str, float]
    """Each metric averaged over the evaluated keywords."""
    skipped: list[str]
    """Keywords with fewer than ``min_positives`` positives (not evaluated)."""


def keyword_labels(
    texts: Sequence[str], keywords: Mapping[str, Sequence[str]]
) -> dict[str, Tensor]:
    """Which texts mention each keyword.

    A text is positive for a keyword when it contains any of the keyword's variations,
    case-insensitively, starting at the beginning of a word (the variation may be followed by
    more letters): ``"superconduct"`` matches ``"Superconducting"`` and ``"non-superconductive"``
    but not ``"nonsuperconducting"``.

    Args:
        texts: ``[N]`` the text of each structure (e.g. its paper title and abstract).
        keywords: keyword name -> its variations.

    Returns:
        keyword name -> ``[N]`` bool labels.
    """
    out = {}
    for name, variations in keywords.items():
        pattern = re.compile(
            r"(?<!\w)(?:" + "|".join(re.escape(v) for v in variations) + ")", re.IGNORECASE
        )
        out[name] = torch.tensor([bool(pattern.search(t)) for t in texts], dtype=torch.bool)
    return out


def screening_metrics(
    scores: Tensor,
    labels: Tensor,
    ks: Sequence[int] = (10, 50),
    downsample: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Ranking quality of ``scores`` for the binary ``labels``, with chance levels.

    Args:
        scores: ``[N]`` float score of each structure (higher = more likely positive).
        labels: ``[N]`` bool ground truth.
        ks: cut-offs for precision@k (``k`` is clipped to ``N``; ties in the score are broken
            by index, as a stable sort would).
        downsample: keep all positives and an equal number of negatives drawn at random
            (``seed``), so the prevalence becomes 1/2 when negatives are plentiful.
        seed: seed of the negative sampling.

    Returns:
        ``n``, ``n_positives``, ``prevalence``, ``precision@k``, ``ap`` (average precision),
        ``roc_auc`` (NaN if only one class is present) and the expected value of each metric
        for a random score: ``random_precision@k`` and ``random_ap`` (both the prevalence) and
        ``random_roc_auc`` (0.5).
    """
    scores, labels = scores.detach().cpu().double(), labels.cpu().bool()
    if downsample:
        keep = _balanced_subset(labels, seed)
        scores, labels = scores[keep], labels[keep]
    n, n_pos = len(labels), int(labels.sum())
    prevalence = n_pos / n if n else float("nan")
    order = torch.sort(scores, descending=True, stable=True).indices
    out = {"n": float(n), "n_positives": float(n_pos), "prevalence": prevalence}
    for k in ks:
        top = min(k, n)
        out[f"precision@{k}"] = labels[order[:top]].double().mean().item() if top else 0.0
        out[f"random_precision@{k}"] = prevalence
    both_classes = 0 < n_pos < n
    y, s = labels.numpy(), scores.numpy()
    out["ap"] = float(average_precision_score(y, s)) if n_pos else float("nan")
    out["roc_auc"] = float(roc_auc_score(y, s)) if both_classes else float("nan")
    out["random_ap"] = prevalence
    out["random_roc_auc"] = 0.5
    return out


def keyword_scores(structure_emb: Tensor, prompt_emb: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """keyword -> ``[N]`` max cosine similarity between each structure and the keyword's prompts.

    Args:
        structure_emb: ``[N, D]`` structure embeddings (normalised here).
        prompt_emb: keyword -> ``[T, D]`` embeddings of its prompts (normalised here).
    """
    structures = torch.nn.functional.normalize(structure_emb.detach().float(), dim=-1)
    out = {}
    for name, prompts in prompt_emb.items():
        prompts = torch.nn.functional.normalize(prompts.detach().float(), dim=-1)
        out[name] = (structures @ prompts.to(structures.device).T).max(dim=1).values
    return out


def keyword_screening(
    scores: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    ks: Sequence[int] = (10, 50),
    min_positives: int = 5,
    downsample: bool = False,
    seed: int = 0,
) -> ScreeningResult:
    """Screen structures for every keyword and average the metrics over keywords.

    Args:
        scores: keyword -> ``[N]`` score of each structure, e.g. the maximum cosine similarity
            between its embedding and the keyword's prompts (:func:`keyword_scores`).
        labels: keyword -> ``[N]`` bool ground truth (e.g. from :func:`keyword_labels`).
        ks: cut-offs for precision@k.
        min_positives: keywords with fewer positives are skipped.
        downsample: balance positives and negatives (see :func:`screening_metrics`).
        seed: seed of the negative sampling.

    Returns:
        Per-keyword metrics, their mean over evaluated keywords and the skipped keywords.
    """
    per_keyword: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    for name, keyword_score in scores.items():
        if int(labels[name].sum()) < min_positives:
            skipped.append(name)
            continue
        per_keyword[name] = screening_metrics(keyword_score, labels[name], ks, downsample, seed)
    return ScreeningResult(per_keyword, _mean_over_keywords(per_keyword), skipped)


def _balanced_subset(labels: Tensor, seed: int) -> Tensor:
    """``[M]`` sorted indices: every positive plus as many random negatives (or all)."""
    positives = torch.nonzero(labels).flatten()
    negatives = torch.nonzero(~labels).flatten()
    generator = torch.Generator().manual_seed(seed)
    chosen = negatives[torch.randperm(len(negatives), generator=generator)[: len(positives)]]
    return torch.sort(torch.cat([positives, chosen])).values


def _mean_over_keywords(per_keyword: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over keywords, ignoring NaNs (empty dict if none evaluated)."""
    if not per_keyword:
        return {}
    keys = next(iter(per_keyword.values())).keys()
    table = torch.tensor([[m[k] for k in keys] for m in per_keyword.values()], dtype=torch.float64)
    return dict(zip(keys, torch.nanmean(table, dim=0).tolist(), strict=True))
