"""Retrieval metrics for paired embeddings, computed in chunks of queries.

Two hit definitions are reported for every query:

* **pair**: the rank of the query's exact partner (``pair_index``) among all targets;
* **group**: the rank of the best-ranked target that shares the query's group (e.g. any
  structure reported in the same paper). The exact partner always counts as a member of the
  query's group, so ``group rank <= pair rank``.

Ranks are 1-based. The score of a (query, target) pair is the dot product of the embeddings
(cosine similarity for L2-normalised embeddings), optionally plus an additive term.

**Tie rule.** The rank of target ``t`` for a query is
``1 + #{j : s_j > s_t} + #{j < t : s_j == s_t}``: targets with a strictly greater score are
ahead, and among targets with exactly the same score, those with a smaller index are ahead.
This is the order a stable descending sort would give, so the result is deterministic and
equals the full-matrix ``argsort`` reference.

Only one chunk of scores ``[chunk_size, Nt]`` is alive at any time, with at most two scratch
tensors of the same shape (about ``3 * chunk_size * Nt * 4`` bytes in float32); the
``Nq x Nt`` matrix is never materialised nor sorted. Scores must not be NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

QueryRowScores = Callable[[slice], Tensor]
"""``f(query rows) -> [len(rows), Nt]``: scores added to the dot products of a block of queries
with all ``Nt`` targets (blocks of queries, where index search takes blocks of targets)."""


def retrieval_metrics(
    query_emb: Tensor,
    target_emb: Tensor,
    query_groups: Tensor,
    target_groups: Tensor,
    pair_index: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    extra_scores: QueryRowScores | None = None,
) -> dict[str, float]:
    """Pair and group Recall@k, mean/median rank and MRR of queries against targets.

    Args:
        query_emb: ``[Nq, D]`` query embeddings (assumed L2-normalised).
        target_emb: ``[Nt, D]`` target embeddings (assumed L2-normalised).
        query_groups: ``[Nq]`` int64 group id of each query.
        target_groups: ``[Nt]`` int64 group id of each target.
        pair_index: ``[Nq]`` int64 index in ``target_emb`` of each query's exact partner.
        ks: cut-offs for Recall@k.
        chunk_size: number of queries scored at once; peak memory is ``O(chunk_size * Nt)``.
        extra_scores: optional ``f(query_slice) -> [len(slice), Nt]`` added to the dot
            products of the queries in ``query_slice`` (e.g. a lexical score for hybrid search).

    Returns:
        ``pair_R@k``, ``pair_mean_rank``, ``pair_median_rank``, ``pair_mrr`` and the same
        keys with the ``group_`` prefix, as Python floats.
    """
    ranks = retrieval_ranks(
        query_emb, target_emb, query_groups, target_groups, pair_index, chunk_size, extra_scores
    )
    return summarise_pair_group(ranks, ks)


def retrieval_ranks(
    query_emb: Tensor,
    target_emb: Tensor,
    query_groups: Tensor,
    target_groups: Tensor,
    pair_index: Tensor,
    chunk_size: int = 1024,
    extra_scores: QueryRowScores | None = None,
) -> tuple[Tensor, Tensor]:
    """The 1-based pair and group rank of every query, ``([Nq], [Nq])`` int64.

    See :func:`retrieval_metrics` for the arguments and the module docstring for the tie rule.
    """
    n_queries = query_emb.shape[0]
    _check_inputs(query_emb, target_emb, query_groups, target_groups, pair_index, chunk_size)
    pair_index = pair_index.to(query_emb.device, torch.long)
    groups = _GroupIndex(target_groups.to(query_emb.device, torch.long))
    query_groups = query_groups.to(query_emb.device, torch.long)
    pair_ranks = torch.empty(n_queries, dtype=torch.long, device=query_emb.device)
    group_ranks = torch.empty_like(pair_ranks)
    # Reused buffers: the chunk's scores and a same-shaped 0/1 float scratch for counting
    # (float sums of 0/1 are exact below 2**24 targets and much faster than bool sums).
    count_dtype = torch.float32 if target_emb.shape[0] < 2**24 else torch.float64
    scores_buf = query_emb.new_empty((min(chunk_size, n_queries), target_emb.shape[0]))
    count_buf = torch.empty_like(scores_buf, dtype=count_dtype)
    for start in range(0, n_queries, chunk_size):
        rows = slice(start, min(start + chunk_size, n_queries))
        scores = torch.mm(query_emb[rows], target_emb.T, out=scores_buf[: rows.stop - start])
        if extra_scores is not None:
            scores.add_(extra_scores(rows))
        count = count_buf[: len(scores)]
        partner = pair_index[rows]
        pair_ranks[rows] = _rank_of(scores, partner, count)
        best = _best_group_member(scores, *groups.members(query_groups[rows], partner))
        group_ranks[rows] = pair_ranks[rows]
        differ = torch.nonzero(best != partner).flatten()
        if len(differ):
            group_ranks[start + differ] = _rank_of(
                scores[differ], best[differ], count[: len(differ)]
            )
    return pair_ranks, group_ranks


def summarise_ranks(ranks: Tensor, ks: Sequence[int], prefix: str = "") -> dict[str, float]:
    """Recall@k, mean rank, median rank and MRR of 1-based ``ranks [N]``.

    The median is the usual one (mean of the two middle values for an even count).
    """
    ranks_f = ranks.double()
    out = {f"{prefix}R@{k}": (ranks <= k).double().mean().item() for k in ks}
    out[f"{prefix}mean_rank"] = ranks_f.mean().item()
    out[f"{prefix}median_rank"] = torch.quantile(ranks_f, 0.5).item()
    out[f"{prefix}mrr"] = ranks_f.reciprocal().mean().item()
    return out


def summarise_pair_group(
    ranks: tuple[Tensor, Tensor], ks: Sequence[int], prefix: str = ""
) -> dict[str, float]:
    """:func:`summarise_ranks` of ``(pair ranks [N], group ranks [N])``, keyed
    ``{prefix}pair_*`` and ``{prefix}group_*``."""
    pair, group = ranks
    return {
        **summarise_ranks(pair, ks, prefix=f"{prefix}pair_"),
        **summarise_ranks(group, ks, prefix=f"{prefix}group_"),
    }


BidirectionalRanks = dict[str, tuple[Tensor, Tensor]]
"""``{"t2s": (pair ranks [N], group ranks [N]), "s2t": (...)}`` of :func:`bidirectional_ranks`."""


def bidirectional_ranks(
    crystal_emb: Tensor,
    text_emb: Tensor,
    groups: Tensor,
    chunk_size: int = 1024,
    extra_t2s: QueryRowScores | None = None,
    extra_s2t: QueryRowScores | None = None,
) -> BidirectionalRanks:
    """Pair and group ranks in both directions for aligned pairs.

    Item ``i``'s crystal and text form a pair. Texts shared by several structures of one
    paper are identical, so in the structure-to-text direction the exact partner ties with
    its duplicates (resolved by the tie rule); group ranks count any text of the same paper
    as a hit and are insensitive to this.

    Args:
        crystal_emb: ``[N, D]`` L2-normalised structure embeddings.
        text_emb: ``[N, D]`` L2-normalised text embeddings.
        groups: ``[N]`` int64 paper id of each item.
        chunk_size: number of queries scored at once.
        extra_t2s: optional additive scores of text queries against structures (``f(rows) ->
            [len(rows), N]``, see :func:`retrieval_metrics`); ``extra_s2t`` the other way.

    Returns:
        ``{"t2s": (pair, group), "s2t": (pair, group)}``, each ``[N]`` int64: ``t2s`` has text
        queries and structure targets, ``s2t`` structure queries and text targets.
    """
    pairs = torch.arange(crystal_emb.shape[0], device=crystal_emb.device)
    return {
        "t2s": retrieval_ranks(text_emb, crystal_emb, groups, groups, pairs, chunk_size, extra_t2s),
        "s2t": retrieval_ranks(crystal_emb, text_emb, groups, groups, pairs, chunk_size, extra_s2t),
    }


def summarise_bidirectional(ranks: BidirectionalRanks, ks: Sequence[int]) -> dict[str, float]:
    """The keys of :func:`retrieval_metrics` prefixed with each direction (``t2s_``, ``s2t_``)."""
    out: dict[str, float] = {}
    for direction, pair_group in ranks.items():
        out.update(summarise_pair_group(pair_group, ks, prefix=f"{direction}_"))
    return out


def bidirectional_metrics(
    crystal_emb: Tensor,
    text_emb: Tensor,
    groups: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """CLaSP retrieval metrics in both directions for aligned pairs (see
    :func:`bidirectional_ranks` for the arguments and ties).

    Returns:
        The keys of :func:`retrieval_metrics` prefixed ``t2s_`` (text queries, structure
        targets) and ``s2t_`` (structure queries, text targets).
    """
    ranks = bidirectional_ranks(crystal_emb, text_emb, groups, chunk_size)
    return summarise_bidirectional(ranks, ks)


def group_sizes(groups: Tensor) -> Tensor:
    """``[N]`` int64: for every item, how many items share its group (itself included)."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse]


def random_expectation(
    n_targets: int,
    group_sizes: Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    prefixes: Sequence[str] = ("t2s_", "s2t_"),
) -> dict[str, float]:
    """Expected metrics of a random ranking (chance level), analytically.

    For a query whose group has ``g`` members among ``N`` targets, under a uniformly random
    order the best group rank ``m`` satisfies ``P(m > k) = C(N-g, k) / C(N, k)``,
    ``E[m] = (N+1)/(g+1)`` and ``E[1/m] = sum_r C(N-r, g-1) / C(N, g) / r``. The pair metrics
    are the ``g = 1`` case: Recall@k ``= k/N``, mean rank ``(N+1)/2``, MRR ``= H_N / N``; the
    pair median rank is the median of the uniform rank, ``(N+1)/2``. Group metrics are
    averaged over queries; the group median rank has no simple closed form and is omitted.

    Args:
        n_targets: ``N``, the number of targets.
        group_sizes: ``[Nq]`` number of targets in each query's group (see :func:`group_sizes`).
        ks: cut-offs for Recall@k.
        prefixes: one copy of the keys per prefix (default: both CLaSP directions).

    Returns:
        The keys of :func:`bidirectional_metrics` except ``*group_median_rank``.
    """
    sizes = torch.as_tensor(group_sizes, dtype=torch.long)
    unique, counts = torch.unique(sizes, return_counts=True)
    weights = counts.double() / counts.sum()
    group: dict[str, float] = {}
    for g, w in zip(unique.tolist(), weights.tolist(), strict=True):
        for key, value in _random_min_rank_stats(n_targets, g, ks).items():
            group[key] = group.get(key, 0.0) + w * value
    pair = _random_min_rank_stats(n_targets, 1, ks)
    pair["median_rank"] = (n_targets + 1) / 2
    out: dict[str, float] = {}
    for prefix in prefixes:
        out.update({f"{prefix}pair_{k}": v for k, v in pair.items()})
        out.update({f"{prefix}group_{k}": v for k, v in group.items()})
    return out


def _random_min_rank_stats(n: int, g: int, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k, mean rank and MRR of the best of ``g`` uniformly random ranks among ``n``."""

    def log_comb(a: Tensor | float, b: float) -> Tensor:
        a = torch.as_tensor(a, dtype=torch.float64)
        return torch.lgamma(a + 1) - math.lgamma(b + 1) - torch.lgamma(a - b + 1)

    out = {}
    for k in ks:
        miss = 0.0 if k > n - g else math.exp(log_comb(n - g, k) - log_comb(n, k))
        out[f"R@{k}"] = 1.0 - miss
    out["mean_rank"] = (n + 1) / (g + 1)
    r = torch.arange(1, n - g + 2, dtype=torch.float64)
    p_min = torch.exp(log_comb(n - r, g - 1) - log_comb(n, g))
    out["mrr"] = (p_min / r).sum().item()
    return out


class _GroupIndex:
    """Targets sorted by group, to list each query's same-group targets without a dense mask."""

    def __init__(self, target_groups: Tensor) -> None:
        sorted_groups, self.order = torch.sort(target_groups, stable=True)
        self.unique, self.counts = torch.unique_consecutive(sorted_groups, return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def members(self, query_groups: Tensor, partner: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, cols)`` of every (query, same-group target) pair, partners included.

        Args:
            query_groups: ``[c]`` group ids of a chunk of queries.
            partner: ``[c]`` index of each query's exact partner.

        Returns:
            Two ``[M]`` int64 tensors: chunk row and target column of each positive.
        """
        pos = torch.searchsorted(self.unique, query_groups).clamp_max(len(self.unique) - 1)
        found = self.unique[pos] == query_groups
        n_members = torch.where(found, self.counts[pos], 0)
        rows = torch.repeat_interleave(
            torch.arange(len(query_groups), device=pos.device), n_members
        )
        first = torch.cumsum(n_members, 0) - n_members
        offset = torch.arange(len(rows), device=pos.device) - first[rows]
        cols = self.order[self.starts[pos][rows] + offset]
        all_rows = torch.cat([rows, torch.arange(len(partner), device=pos.device)])
        return all_rows, torch.cat([cols, partner])


def _best_group_member(scores: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``[c]`` index of each row's best positive: highest score, then smallest index.

    Args:
        scores: ``[c, Nt]`` chunk of scores.
        rows: ``[M]`` chunk row of each positive.
        cols: ``[M]`` target index of each positive.
    """
    n_rows, n_targets = scores.shape
    values = scores[rows, cols]
    best = torch.full((n_rows,), -math.inf, dtype=scores.dtype, device=scores.device)
    best = best.scatter_reduce(0, rows, values, reduce="amax")
    candidates = torch.where(values == best[rows], cols, n_targets)
    first = torch.full((n_rows,), n_targets, dtype=torch.long, device=scores.device)
    return first.scatter_reduce(0, rows, candidates, reduce="amin")


def _rank_of(scores: Tensor, target: Tensor, count_buf: Tensor) -> Tensor:
    """``[c]`` 1-based rank of ``scores[i, target[i]]`` within row ``i`` (module tie rule).

    Args:
        scores: ``[c, Nt]`` scores of a chunk of queries.
        target: ``[c]`` target index whose rank is wanted, per row.
        count_buf: ``[c, Nt]`` float scratch space, overwritten.

    Counts ``s > s_t`` and ``s == s_t`` in two passes; the index-based tie-break is only
    evaluated on the (rare) rows where another target has exactly the same score.
    """
    value = scores.gather(1, target[:, None])
    ranks = 1 + torch.gt(scores, value, out=count_buf).sum(1).long()
    n_equal = torch.eq(scores, value, out=count_buf).sum(1)
    tied = torch.nonzero(n_equal > 1).flatten()
    if len(tied):
        cols = torch.arange(scores.shape[1], device=scores.device)
        before = (scores[tied] == value[tied]) & (cols < target[tied, None])
        ranks[tied] += before.sum(1)
    return ranks


def _check_inputs(
    query_emb: Tensor,
    target_emb: Tensor,
    query_groups: Tensor,
    target_groups: Tensor,
    pair_index: Tensor,
    chunk_size: int,
) -> None:
    """Raise ``ValueError`` on inconsistent shapes or an out-of-range partner index."""
    n_queries, n_targets = query_emb.shape[0], target_emb.shape[0]
    if query_emb.ndim != 2 or target_emb.ndim != 2 or query_emb.shape[1] != target_emb.shape[1]:
        raise ValueError(
            f"embeddings must be [Nq, D] and [Nt, D], got {query_emb.shape} and {target_emb.shape}"
        )
    if query_groups.shape != (n_queries,) or pair_index.shape != (n_queries,):
        raise ValueError("query_groups and pair_index must have shape [Nq]")
    if target_groups.shape != (n_targets,):
        raise ValueError("target_groups must have shape [Nt]")
    if n_targets == 0 or chunk_size < 1:
        raise ValueError("need at least one target and chunk_size >= 1")
    if n_queries and (pair_index.min() < 0 or pair_index.max() >= n_targets):
        raise ValueError("pair_index out of range")
