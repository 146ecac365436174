"""Bootstrap intervals that resample papers (groups), not single pairs.

Structures of one paper share a title, so their hits are correlated; resampling pairs would
understate the spread. Every resample draws ``G`` papers with replacement out of the ``G`` papers
of the split (all of a drawn paper's items come along, once per draw) and recomputes the
statistic. The interval is the percentile interval of the resampled statistics (numpy's default,
linear interpolation).

The draws are ``numpy.random.default_rng(seed).integers(0, G, size=(n_resamples, G))``: paper
indices into the sorted unique group ids, so a fixed seed gives the same interval on any machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

N_RESAMPLES = 1000
"""Bootstrap resamples of the report's intervals."""
LEVEL = 0.95
"""Coverage of the report's intervals."""


class Interval(NamedTuple):
    """A percentile bootstrap interval ``[low, high]`` of a statistic."""

    low: float
    high: float


class PaperResamples:
    """The paper draws of a bootstrap over the items whose paper ids are ``groups [N]``.

    Attributes:
        paper_of_item: ``[N]`` index of each item's paper among the sorted unique ids.
        draws: ``[n_resamples, G]`` paper indices drawn with replacement.
    """

    def __init__(self, groups: Tensor | np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0):
        ids = np.asarray(torch.as_tensor(groups).cpu(), dtype=np.int64)
        _, self.paper_of_item = np.unique(ids, return_inverse=True)
        n_papers = int(self.paper_of_item.max()) + 1 if len(ids) else 0
        if n_papers == 0:
            raise ValueError("cannot bootstrap an empty split")
        rng = np.random.default_rng(seed)
        self.draws = rng.integers(0, n_papers, size=(n_resamples, n_papers))

    @property
    def n_papers(self) -> int:
        return self.draws.shape[1]

    def mean_interval(self, values: Tensor | np.ndarray, level: float = LEVEL) -> Interval:
        """Interval of the mean of per-item ``values [N]`` (e.g. 0/1 hits at k) over the items
        of each resample: ``sum of drawn papers' value sums / their item counts``."""
        v = np.asarray(torch.as_tensor(values).double().cpu())
        sums = np.bincount(self.paper_of_item, weights=v, minlength=self.n_papers)
        counts = np.bincount(self.paper_of_item, minlength=self.n_papers).astype(np.float64)
        return percentile_interval(sums[self.draws].sum(1) / counts[self.draws].sum(1), level)

    def item_indices(self) -> Iterator[np.ndarray]:
        """Each resample's item indices ``[M]`` (a drawn paper's items once per draw)."""
        order = np.argsort(self.paper_of_item, kind="stable")
        counts = np.bincount(self.paper_of_item, minlength=self.n_papers)
        starts = np.cumsum(counts) - counts
        for draw in self.draws:
            yield np.concatenate([order[starts[p] : starts[p] + counts[p]] for p in draw])

    def statistic_interval(
        self, statistic: Callable[[np.ndarray], float], level: float = LEVEL
    ) -> Interval:
        """Interval of any ``statistic(item indices [M]) -> float`` (NaN results are dropped)."""
        values = np.array([statistic(items) for items in self.item_indices()], dtype=np.float64)
        return percentile_interval(values[np.isfinite(values)], level)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval:
    """The central ``level`` percentile interval of the resampled ``values [B]``."""
    if len(values) == 0:
        return Interval(float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


def recall_intervals(
    ranks: Tensor, resamples: PaperResamples, ks: tuple[int, ...], prefix: str = ""
) -> dict[str, Interval]:
    """``{prefix}R@k`` -> paper-bootstrap interval of Recall@k of 1-based ``ranks [N]``."""
    return {f"{prefix}R@{k}": resamples.mean_interval(ranks <= k) for k in ks}


def bidirectional_intervals(
    ranks: dict[str, tuple[Tensor, Tensor]], resamples: PaperResamples, ks: tuple[int, ...]
) -> dict[str, Interval]:
    """``{direction}_{pair|group}_R@k`` -> interval, for ``{direction: (pair ranks [N], group
    ranks [N])}`` (:func:`~clasp_pl.evaluation.metrics.bidirectional_ranks`) of the items
    whose papers ``resamples`` draws."""
    out: dict[str, Interval] = {}
    for direction, (pair, group) in ranks.items():
        out.update(recall_intervals(pair, resamples, ks, f"{direction}_pair_"))
        out.update(recall_intervals(group, resamples, ks, f"{direction}_group_"))
    return out
