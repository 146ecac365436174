"""Hybrid score: learned cosine similarity plus ``alpha`` times a lexical chemistry score.

``score(query, structure) = cosine + alpha * lexical``, where ``lexical`` in [0, 1] is
:class:`~clasp_pl.search.lexical.LexicalIndex`'s score of the query text against the structure's
composition (1 for the exact reduced formula, less for shared elements).
:class:`LexicalTerm` is the one place where the ``alpha * lexical`` term is formed, for search
over an index (:func:`hybrid_search`) and for the ranks and the choice of ``alpha`` in
``clasp eval`` (:mod:`clasp_pl.evaluation.hybrid`). The ``alpha`` of a checkpoint is stored
beside it (:mod:`clasp_pl.search.alpha_store`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from pymatgen.core import Composition
from torch import Tensor

from clasp_pl.search.index import SCORE_BUDGET, EmbeddingIndex
from clasp_pl.search.lexical import LexicalIndex, explain


@dataclass(frozen=True)
class LexicalTerm:
    """The ``alpha * lexical`` part of the hybrid scores of ``Q`` query texts against ``N``
    targets (structures), added to the cosine similarities wherever those are scored.

    Attributes:
        lexical: ``[Q, N]`` lexical scores in [0, 1] (:meth:`LexicalIndex.scores`).
        alpha: weight of the lexical score.
    """

    lexical: Tensor
    alpha: float

    def of_query_rows(self, rows: slice) -> Tensor:
        """``[len(rows), N]``: the term of a block of queries (the extra scores of
        :func:`~clasp_pl.evaluation.metrics.retrieval_ranks`)."""
        return self.alpha * self.lexical[rows]

    def of_target_rows(self, rows: slice) -> Tensor:
        """``[Q, len(rows)]``: the term of a block of targets (the extra scores of
        :func:`~clasp_pl.search.index.topk_search`)."""
        return self.alpha * self.lexical[:, rows]

    def transposed(self) -> LexicalTerm:
        """The term with targets as queries (``[N, Q]``: structure queries against texts)."""
        return LexicalTerm(self.lexical.T, self.alpha)

    def parts(self, scores: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """``(cosine, lexical)``, each ``[Q, k]``: the two parts of the hybrid ``scores
        [Q, k]`` of the targets ``indices [Q, k]``."""
        lexical = self.lexical.gather(1, indices)
        return scores - self.alpha * lexical, lexical


def lexical_blocks(
    lexical: LexicalIndex, texts: Sequence[str], block: int, like: Tensor
) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, [len(rows), N] lexical scores)`` of consecutive blocks of ``block`` query
    texts, on ``like``'s device and in its dtype (a block's scores are computed once, however
    many times they are used)."""
    for start in range(0, len(texts), block):
        rows = slice(start, start + block)
        yield rows, lexical.scores(texts[rows]).to(like.device, like.dtype)


@dataclass
class Hits:
    """Top-k results of ``Q`` queries, each field ``[Q, k]``, best first.

    Attributes:
        indices: index rows (int64).
        scores: hybrid scores ``cosine + alpha * lexical``.
        cosine: the learned part.
        lexical: the lexical score (0 for structure queries or without hybrid scoring).
    """

    indices: Tensor
    scores: Tensor
    cosine: Tensor
    lexical: Tensor


def lexical_index(meta: Sequence[dict]) -> LexicalIndex:
    """Lexical index over the reduced formulas of an index's meta lines."""
    return LexicalIndex([Composition(line["formula"]) for line in meta])


def hybrid_search(
    index: EmbeddingIndex,
    query_emb: Tensor,
    query_texts: Sequence[str | None],
    k: int,
    alpha: float,
    lexical: LexicalIndex | None,
) -> Hits:
    """Top-``k`` hybrid search of ``Q`` queries.

    Args:
        index: the embedding index.
        query_emb: ``[Q, D]`` L2-normalised query embeddings (text or structure).
        query_texts: ``[Q]`` query text, or None for a structure query (no lexical part).
        k: hits per query.
        alpha: weight of the lexical score.
        lexical: lexical index over ``index``'s compositions (:func:`lexical_index`); None
            searches by cosine alone.

    Lexical scores ``[q, N]`` are computed for blocks of queries small enough that a block
    holds at most ``SCORE_BUDGET`` values.
    """
    if lexical is None:
        scores, indices = index.search(query_emb, k)
        return Hits(indices, scores, scores, torch.zeros_like(scores))
    texts = [text or "" for text in query_texts]
    block = max(1, SCORE_BUDGET // max(len(index), 1))
    parts = []
    for rows, lex in lexical_blocks(lexical, texts, block, query_emb):
        term = LexicalTerm(lex, alpha)
        scores, indices = index.search(query_emb[rows], k, extra_scores=term.of_target_rows)
        parts.append(Hits(indices, scores, *term.parts(scores, indices)))
    return Hits(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Hits)))


def explain_hit(query_text: str | None, formula: str, lexical: float, alpha: float) -> list[str]:
    """Which parts scored a hit: ``"learned"`` always, plus the lexical reason (e.g.
    ``"formula match BaTiO3"``, ``"elements Fe,O (Jaccard 0.67)"``) when it added to the score."""
    parts = ["learned"]
    if query_text and alpha > 0 and lexical > 0:
        parts.append(explain(query_text, Composition(formula)))
    return parts
