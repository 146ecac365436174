"""Queries beyond titles: "a monoclinic sulfate", built from the split's own labels.

Each structure of the split gets two labels computed from its structure alone
(:mod:`clasp_pl.data.labels`): its crystal system and its chemical class. Every (crystal system,
chemical class) pair held by at least ``min_relevant`` structures becomes a query without a
formula, e.g. ``"a monoclinic sulfate"``; every structure with both labels is relevant to it.

Two measures per query, averaged over queries (:class:`QueryScores`):

- **AP**, average precision of the full ranking of the split's structures (ties in a score are
  broken by index, as a stable sort would: the module tie rule of
  :mod:`clasp_pl.evaluation.metrics`);
- **R@10**: relevant structures in the top 10 over ``min(10, n_relevant)`` (1.0 when the top 10
  holds as many relevant structures as it can).

The lexical baseline (:class:`~clasp_pl.search.lexical.LexicalIndex`) has no formula to match,
but it reads element words: "oxide" names O, "sulfate" S and O, "silicate" Si and O, so it ranks
structures holding those elements first; it knows nothing of the crystal system.

Random ranking is given by its expectation: for ``R`` relevant among ``N``,
``E[AP] = (1/N) sum_{i=1..N} (1 + (i-1)(R-1)/(N-1)) / i`` (a relevant item at rank ``i`` has
``(i-1)(R-1)/(N-1)`` other relevant items above it on average) and
``E[R@10] = (10 R / N) / min(10, R)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from clasp_pl.api import embed_texts
from clasp_pl.data.labels import (
    CLASS_NOUNS,
    CRYSTAL_SYSTEMS,
    crystal_system_index,
    mineral_class_of,
)
from clasp_pl.data.records import CrystalRecord
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.lexical import LexicalIndex

MIN_RELEVANT = 5
"""Queries with fewer relevant structures in the split are left out."""
TOP_K = 10


class DescriptionQuery(NamedTuple):
    """A query and its relevant structures.

    Attributes:
        text: e.g. ``"a monoclinic sulfate"``.
        relevant: ``[N]`` bool, the split's structures with both labels.
    """

    text: str
    relevant: Tensor


class QueryScores(NamedTuple):
    """Mean AP and R@10 over the queries of one scorer."""

    mean_ap: float
    mean_recall_at_10: float


def structure_labels(records: Sequence[CrystalRecord]) -> list[tuple[str, str] | None]:
    """``[N]`` (crystal system, chemical class) of each record; None when spglib fails."""
    out: list[tuple[str, str] | None] = []
    for record in records:
        system = crystal_system_index(record)
        chemical = mineral_class_of(record.composition)
        out.append(None if system is None else (CRYSTAL_SYSTEMS[system], chemical))
    return out


def query_text(system: str, chemical_class: str) -> str:
    """``"a monoclinic sulfate"``, ``"an orthorhombic oxide"``."""
    article = "an" if system[0] in "aeiou" else "a"
    return f"{article} {system} {CLASS_NOUNS[chemical_class]}"


def description_queries(
    labels: Sequence[tuple[str, str] | None], min_relevant: int = MIN_RELEVANT
) -> list[DescriptionQuery]:
    """The queries of the label pairs held by ``>= min_relevant`` of the ``[N]`` ``labels``
    (:func:`structure_labels`), most relevant structures first (then by text)."""
    counts = Counter(label for label in labels if label is not None)
    kept = sorted((c for c in counts.items() if c[1] >= min_relevant), key=lambda c: (-c[1], c[0]))
    return [
        DescriptionQuery(
            query_text(*label), torch.tensor([other == label for other in labels], dtype=torch.bool)
        )
        for label, _ in kept
    ]


def ranking_ap_and_recall(scores: Tensor, relevant: Tensor, k: int = TOP_K) -> tuple[float, float]:
    """(AP, R@k as defined in the module docstring) of ``scores [N]`` for ``relevant [N]``."""
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    hits = relevant[order].double()
    n_relevant = hits.sum().item()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    ap = (precision * hits).sum().item() / n_relevant
    return ap, hits[:k].sum().item() / min(k, n_relevant)


def score_queries(scores: Tensor, queries: Sequence[DescriptionQuery]) -> QueryScores:
    """Mean AP and R@10 of ``scores [Q, N]`` (query ``q``'s score of each structure)."""
    results = np.array(
        [ranking_ap_and_recall(s, q.relevant) for s, q in zip(scores, queries, strict=True)]
    )
    return QueryScores(float(results[:, 0].mean()), float(results[:, 1].mean()))


def random_expectation(queries: Sequence[DescriptionQuery], k: int = TOP_K) -> QueryScores:
    """Expected mean AP and R@k of a uniformly random ranking (module docstring)."""
    aps, recalls = [], []
    for query in queries:
        n, r = len(query.relevant), int(query.relevant.sum())
        i = np.arange(1, n + 1, dtype=np.float64)
        other = (i - 1) * (r - 1) / (n - 1) if n > 1 else np.zeros_like(i)
        aps.append(float(((1 + other) / i).sum() / n))
        recalls.append(min(k, n) * r / n / min(k, r))
    return QueryScores(float(np.mean(aps)), float(np.mean(recalls)))


class DescriptionReport(NamedTuple):
    """The description-query part of the report.

    Attributes:
        queries: the query texts with their number of relevant structures.
        min_relevant: the threshold below which a label pair is not a query.
        rows: method -> its mean AP and R@10.
    """

    queries: dict[str, int]
    min_relevant: int
    rows: dict[str, QueryScores]


LEARNED_ROW = "CLaSP (query text embedding vs structures)"
LEXICAL_ROW = "lexical (formulas/elements in the query)"
RANDOM_ROW = "random (expected)"


def evaluate_description_queries(
    model: CLaSPModule,
    crystal_emb: Tensor,
    records: Sequence[CrystalRecord],
    max_length: int,
    min_relevant: int = MIN_RELEVANT,
) -> DescriptionReport:
    """Description queries of the split's ``records [N]`` scored by ``model`` (cosine of the
    query's text embedding with the structures' ``crystal_emb [N, D]``), by the lexical match
    and by chance."""
    queries = description_queries(structure_labels(records), min_relevant)
    counts = {q.text: int(q.relevant.sum()) for q in queries}
    if not queries:
        return DescriptionReport(counts, min_relevant, {})
    texts = [q.text for q in queries]
    text_emb = torch.nn.functional.normalize(
        embed_texts(model.eval(), texts, max_length=max_length).cpu().float(), dim=-1
    )
    structures = torch.nn.functional.normalize(crystal_emb.float(), dim=-1)
    lexical = LexicalIndex([r.composition for r in records]).scores(texts)
    rows = {
        LEARNED_ROW: score_queries(text_emb @ structures.T, queries),
        LEXICAL_ROW: score_queries(lexical, queries),
        RANDOM_ROW: random_expectation(queries),
    }
    return DescriptionReport(counts, min_relevant, rows)


def description_table(report: DescriptionReport) -> str:
    """Markdown section of :class:`DescriptionReport`."""
    lines = [
        "**Description queries** (crystal system × chemical class, no formula; "
        f"{len(report.queries)} queries with ≥ {report.min_relevant} relevant structures; "
        "R@10 = relevant in the top 10 / min(10, relevant))",
        "",
    ]
    if not report.rows:
        return "\n".join([*lines, "No label pair has enough structures in this split.", ""])
    lines += ["| method | mean AP | mean R@10 |", "|---|---|---|"]
    lines += [
        f"| {name} | {s.mean_ap:.3f} | {s.mean_recall_at_10:.3f} |"
        for name, s in report.rows.items()
    ]
    return "\n".join([*lines, ""])
