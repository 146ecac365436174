"""Each structure's keyword-screening scores and labels, saved per evaluated split and pooled
over the test folds of ``clasp cv`` (every structure is tested once, so the pool holds the
whole dataset's positives)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from clasp_pl.evaluation.bootstrap import Interval, PaperResamples
from clasp_pl.evaluation.screening import keyword_screening

KEYWORD_SCORES = "keyword_scores.npz"
"""The file of :class:`KeywordScores` in a report folder."""


class KeywordScores(NamedTuple):
    """Keyword scores of ``N`` structures.

    Attributes:
        keywords: ``K`` keyword names.
        scores: ``[K, N]`` float32 score of each structure for each keyword.
        labels: ``[K, N]`` bool ground truth.
        groups: ``[N]`` int64 paper ids.
    """

    keywords: tuple[str, ...]
    scores: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(
        cls, scores: Mapping[str, Tensor], labels: Mapping[str, Tensor], groups: Tensor
    ) -> KeywordScores:
        names = tuple(scores)
        return cls(
            names,
            np.stack([scores[k].cpu().float().numpy() for k in names]),
            np.stack([labels[k].cpu().bool().numpy() for k in names]),
            groups.cpu().numpy().astype(np.int64),
        )

    def save(self, path: Path) -> None:
        np.savez(
            path,
            keywords=np.array(self.keywords),
            scores=self.scores,
            labels=self.labels,
            groups=self.groups,
        )

    @classmethod
    def load(cls, path: Path) -> KeywordScores:
        with np.load(path) as data:
            return cls(
                tuple(data["keywords"].tolist()), *(data[k] for k in ("scores", "labels", "groups"))
            )

    def subset(self, items: np.ndarray) -> KeywordScores:
        """The structures at ``items [M]`` (repeats allowed)."""
        return KeywordScores(
            self.keywords, self.scores[:, items], self.labels[:, items], self.groups[items]
        )


def pool(parts: Sequence[KeywordScores]) -> KeywordScores:
    """The structures of all ``parts`` (same keywords), e.g. the test folds of a k-fold run."""
    keywords = parts[0].keywords
    if any(p.keywords != keywords for p in parts):
        raise ValueError("the keyword lists of the pooled folds differ")
    return KeywordScores(
        keywords,
        np.concatenate([p.scores for p in parts], axis=1),
        np.concatenate([p.labels for p in parts], axis=1),
        np.concatenate([p.groups for p in parts]),
    )


class PooledScreening(NamedTuple):
    """Screening of pooled structures: the scored keywords and the mean metrics with intervals.

    Attributes:
        n_structures: structures pooled.
        scored: keywords with at least ``min_positives`` positives.
        skipped: the others.
        mean_roc_auc / mean_ap: mean over the scored keywords.
        roc_auc_interval / ap_interval: paper-bootstrap intervals of those means.
        per_keyword: keyword -> its metrics (:func:`~clasp_pl.evaluation.screening.screening_metrics`).
    """

    n_structures: int
    scored: list[str]
    skipped: list[str]
    mean_roc_auc: float
    mean_ap: float
    roc_auc_interval: Interval
    ap_interval: Interval
    per_keyword: dict[str, dict[str, float]]


def pooled_screening(
    scores: KeywordScores, min_positives: int, n_resamples: int = 200, seed: int = 0
) -> PooledScreening:
    """Screen the pooled structures; the keywords scored are those with ``min_positives``
    positives in the whole pool, and the intervals resample papers (``n_resamples``)."""
    result = _screen(scores, min_positives)
    scored = list(result.per_keyword)
    kept = scores._replace(
        keywords=tuple(scored),
        scores=scores.scores[[scores.keywords.index(k) for k in scored]],
        labels=scores.labels[[scores.keywords.index(k) for k in scored]],
    )
    resamples = PaperResamples(scores.groups, n_resamples, seed)

    def mean_of(metric: str):
        return lambda items: _screen(kept.subset(items), 1).mean.get(metric, float("nan"))

    return PooledScreening(
        len(scores.groups),
        scored,
        result.skipped,
        result.mean.get("roc_auc", float("nan")),
        result.mean.get("ap", float("nan")),
        resamples.statistic_interval(mean_of("roc_auc")),
        resamples.statistic_interval(mean_of("ap")),
        result.per_keyword,
    )


def _screen(scores: KeywordScores, min_positives: int):
    as_tensors = {k: torch.from_numpy(scores.scores[i]) for i, k in enumerate(scores.keywords)}
    labels = {k: torch.from_numpy(scores.labels[i]) for i, k in enumerate(scores.keywords)}
    return keyword_screening(as_tensors, labels, min_positives=min_positives)
