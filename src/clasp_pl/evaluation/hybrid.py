"""The hybrid score in the evaluation report: ``alpha`` chosen on validation pairs, and the
ranks of a split under ``cosine + alpha * lexical``.

The score itself is :class:`clasp_pl.search.hybrid.LexicalTerm`, the same as ``clasp
search``'s; the chosen ``alpha`` is stored for it by :func:`clasp_pl.search.alpha_store.save_alpha`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from clasp_pl.evaluation.metrics import (
    BidirectionalRanks,
    bidirectional_ranks,
    retrieval_ranks,
    summarise_ranks,
)
from clasp_pl.evaluation.split import SplitEmbeddings, split_lexical_index
from clasp_pl.search.hybrid import LexicalTerm, lexical_blocks
from clasp_pl.search.lexical import LexicalIndex

ALPHA_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def choose_alpha(
    text_emb: Tensor,
    crystal_emb: Tensor,
    texts: Sequence[str],
    lexical: LexicalIndex,
    groups: Tensor,
    grid: Sequence[float] = ALPHA_GRID,
    chunk_size: int = 1024,
) -> tuple[float, dict[float, float]]:
    """The ``alpha`` of ``grid`` with the best text-to-structure group Recall@10.

    Args:
        text_emb: ``[N, D]`` text embeddings of the validation pairs (the queries).
        crystal_emb: ``[N, D]`` structure embeddings of the same pairs (the targets).
        texts: ``[N]`` the query texts (for the lexical score).
        lexical: lexical index over the ``N`` structures' compositions.
        groups: ``[N]`` int64 paper id of each pair.
        grid: candidate values; ties go to the earlier one.
        chunk_size: queries scored at once (their lexical scores are computed once for all
            values of the grid).

    Returns:
        ``(best alpha, {alpha: group R@10})``.
    """
    pair_index = torch.arange(len(texts))
    ranks: dict[float, list[Tensor]] = {alpha: [] for alpha in grid}
    for rows, lex in lexical_blocks(lexical, texts, chunk_size, text_emb):
        for alpha in grid:
            _, group_ranks = retrieval_ranks(
                text_emb[rows],
                crystal_emb,
                groups[rows],
                groups,
                pair_index[rows],
                chunk_size,
                extra_scores=LexicalTerm(lex, alpha).of_query_rows,
            )
            ranks[alpha].append(group_ranks)
    recall = {alpha: summarise_ranks(torch.cat(r), ks=(10,))["R@10"] for alpha, r in ranks.items()}
    best = max(grid, key=recall.__getitem__)  # the first of equals
    return best, recall


def choose_split_alpha(val: SplitEmbeddings) -> tuple[float, dict[float, float]]:
    """:func:`choose_alpha` on the pairs of a (validation) split."""
    return choose_alpha(val.text, val.crystal, val.captions, split_lexical_index(val), val.groups)


def hybrid_ranks(
    split: SplitEmbeddings, lexical: Tensor, alpha: float, learned: bool = True
) -> BidirectionalRanks:
    """Ranks for score = cosine + ``alpha`` x ``lexical [N, N]`` (``learned=False``: lexical
    alone, the cosine part set to 0)."""
    if learned:
        crystal, text = split.crystal, split.text
    else:
        crystal = text = torch.zeros(len(lexical), 1)
    term = LexicalTerm(lexical, alpha)
    return bidirectional_ranks(
        crystal,
        text,
        split.groups,
        extra_t2s=term.of_query_rows,
        extra_s2t=term.transposed().of_query_rows,
    )


def hybrid_row_name(alpha: float, split: str) -> str:
    """The hybrid row's label; on the validation split α was chosen on the same pairs."""
    origin = "α from val, in-sample" if split == "val" else "α from val"
    return f"hybrid: CLaSP + {alpha:g} x lexical ({origin})"
