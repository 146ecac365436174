"""Hybrid search: learned cosine similarity plus ``alpha`` times a lexical chemistry score.

``score(query, structure) = cosine + alpha * lexical``, where ``lexical`` in [0, 1] is
:class:`~clasp_pl.search.lexical.LexicalIndex`'s score of the query text against the structure's
composition (1 for the exact reduced formula, less for shared elements). ``alpha`` is chosen on a
validation split by :func:`choose_alpha` (text-to-structure group Recall@10) and stored next to
the checkpoint, one file per checkpoint (``last.ckpt`` -> ``last.ckpt.alpha.json``) with the
checkpoint's sha256 prefix (:func:`save_alpha`); :func:`load_alpha` reads it back only for that
same checkpoint file, so a checkpoint overwritten since (``last.ckpt``) gets the default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from pymatgen.core import Composition
from torch import Tensor

from clasp_pl.evaluation.metrics import retrieval_ranks, summarise_ranks
from clasp_pl.search.index import SCORE_BUDGET, EmbeddingIndex, checkpoint_sha256
from clasp_pl.search.lexical import LexicalIndex, explain

DEFAULT_ALPHA = 0.1
ALPHA_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
ALPHA_SUFFIX = ".alpha.json"


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
    for start in range(0, len(texts), block):
        lex = lexical.scores(texts[start : start + block]).to(query_emb.device, query_emb.dtype)
        scores, indices = index.search(
            query_emb[start : start + block],
            k,
            extra_scores=lambda rows, lex=lex: alpha * lex[:, rows],
        )
        lexical_part = lex.gather(1, indices)
        parts.append(Hits(indices, scores, scores - alpha * lexical_part, lexical_part))
    return Hits(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Hits)))


def explain_hit(query_text: str | None, formula: str, lexical: float, alpha: float) -> list[str]:
    """Which parts scored a hit: ``"learned"`` always, plus the lexical reason (e.g.
    ``"formula match BaTiO3"``, ``"elements Fe,O (Jaccard 0.67)"``) when it added to the score."""
    parts = ["learned"]
    if query_text and alpha > 0 and lexical > 0:
        parts.append(explain(query_text, Composition(formula)))
    return parts


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
    for start in range(0, len(texts), chunk_size):
        rows = slice(start, start + chunk_size)
        lex = lexical.scores(texts[rows]).to(text_emb.dtype)
        for alpha in grid:
            _, group_ranks = retrieval_ranks(
                text_emb[rows],
                crystal_emb,
                groups[rows],
                groups,
                pair_index[rows],
                chunk_size,
                extra_scores=lambda chunk, lex=lex, alpha=alpha: alpha * lex[chunk],
            )
            ranks[alpha].append(group_ranks)
    recall = {alpha: summarise_ranks(torch.cat(r), ks=(10,))["R@10"] for alpha, r in ranks.items()}
    best = max(grid, key=recall.__getitem__)  # the first of equals
    return best, recall


def alpha_path(ckpt: str | Path) -> Path:
    """Where the checkpoint's alpha is stored: ``<checkpoint file name>.alpha.json`` beside it."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + ALPHA_SUFFIX)


def save_alpha(ckpt: str | Path, alpha: float, recall: dict[float, float]) -> Path:
    """Write :func:`alpha_path`: the chosen value, R@10 per candidate and the checkpoint's
    sha256 prefix; returns the path."""
    path = alpha_path(ckpt)
    payload = {
        "alpha": alpha,
        "metric": "t2s_group_R@10",
        "grid": {str(a): r for a, r in recall.items()},
        "checkpoint_sha256": checkpoint_sha256(ckpt),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def load_alpha(ckpt: str | Path) -> tuple[float, str]:
    """``(alpha, where it came from)``: the value stored for this checkpoint file
    (:func:`save_alpha`), else the default :data:`DEFAULT_ALPHA` when there is none or it was
    chosen for another version of the file (the sha256 differs)."""
    path = alpha_path(ckpt)
    if not path.is_file():
        return DEFAULT_ALPHA, f"default (no {path.name} next to the checkpoint)"
    stored = json.loads(path.read_text())
    if stored.get("checkpoint_sha256") != checkpoint_sha256(ckpt):
        return DEFAULT_ALPHA, f"default ({path.name} was chosen for another version of the file)"
    return float(stored["alpha"]), f"stored with the model ({path})"
