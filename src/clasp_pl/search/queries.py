"""Queries against an index: embedding text and CIF queries, and the hit rows every front end
shows (``clasp search``, ``clasp serve``, ``clasp map --queries``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clasp_pl.api import embed_dim, embed_structures, embed_texts
from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
from clasp_pl.data.rejects import Reject
from clasp_pl.errors import UserError
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.hybrid import Hits, explain_hit
from clasp_pl.search.index import EmbeddingIndex

DEFAULT_TOP_K = 10
"""Hits per query when none is asked for (``clasp search``, ``clasp serve``'s API)."""
QUERY_BATCH_SIZE = 256
"""Text queries embedded per forward pass."""


def is_cif_query(query: str) -> bool:
    """Whether a query names an existing CIF file (a structure query)."""
    return query.lower().endswith(".cif") and Path(query).is_file()


def read_queries(path: str | Path) -> list[str]:
    """Queries of a file: a CSV or JSONL with a ``query`` column, else one per non-empty line.

    Raises:
        UserError: the file is missing or holds no query.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(path, "no such query file", "check the path of --queries")
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            queries = [row["query"] for row in csv.DictReader(handle)]
        elif path.suffix.lower() in (".jsonl", ".json"):
            queries = [json.loads(line)["query"] for line in handle if line.strip()]
        else:
            queries = [line.strip() for line in handle if line.strip()]
    if not queries:
        raise UserError(
            path, "holds no query", "write one query per line (or a CSV/JSONL `query` column)"
        )
    return queries


def embed_queries(
    model: CLaSPModule, queries: Sequence[str], batch_size: int
) -> tuple[Tensor, list[str | None]]:
    """``([Q, D] query embeddings, [Q] texts)``; the text is None for a CIF query.

    Raises:
        ValueError: when a CIF query cannot be read (the reject's message).
    """
    texts = [None if is_cif_query(q) else q for q in queries]
    text_rows = [i for i, t in enumerate(texts) if t is not None]
    cif_rows = [i for i, t in enumerate(texts) if t is None]
    records = []
    for row in cif_rows:
        job = Job(id=Path(queries[row]).stem, source=queries[row], path=queries[row])
        result = job_to_record(job, IngestOptions(require_text=False))
        if isinstance(result, Reject):
            raise ValueError(f"cannot read query CIF: {result.message} ({result.reason})")
        records.append(result)
    out = torch.empty(len(queries), embed_dim(model), device=model.device)
    out[text_rows] = embed_texts(model, [queries[i] for i in text_rows], batch_size)
    out[cif_rows] = embed_structures(model, records)
    return out, texts


def result_rows(
    index: EmbeddingIndex, texts: Sequence[str | None], hits: Hits, alpha: float
) -> list[list[dict[str, Any]]]:
    """Per query, its hits as dicts: rank, score, cosine, lexical, meta fields and ``parts``."""
    out = []
    for q, text in enumerate(texts):
        rows = []
        for rank, row in enumerate(hits.indices[q].tolist(), start=1):
            meta = index.meta[row]
            lexical = float(hits.lexical[q, rank - 1])
            rows.append(
                {
                    "rank": rank,
                    "score": round(float(hits.scores[q, rank - 1]), 6),
                    "cosine": round(float(hits.cosine[q, rank - 1]), 6),
                    "lexical": round(lexical, 6),
                    **meta,
                    "parts": explain_hit(text, meta["formula"], lexical, alpha),
                }
            )
        out.append(rows)
    return out
