"""Text queries on the map: a query's score as a colour, and each query's top-k hits as marks.

Both use the index's own model. The colour is the learned cosine similarity of the query to
every structure (the part of the score that is the model's). The marks are the hits that
``clasp search`` returns for the same query: hybrid score ``cosine + alpha * lexical`` with the
model's stored ``alpha`` (:func:`~clasp_pl.search.hybrid.load_alpha`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clasp_pl.api import embed_texts, score
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex
from clasp_pl.viz.html import QueryMarks


def query_scores(model: CLaSPModule, embeddings: np.ndarray, query: str) -> np.ndarray:
    """``[N]`` float32 cosine similarities of ``query`` to ``[N, D]`` L2-normalised embeddings."""
    query_emb = embed_texts(model, [query]).float()
    targets = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    return score(query_emb, targets).squeeze(0).cpu().numpy()


def query_marks(
    index: EmbeddingIndex, model: CLaSPModule, queries: Sequence[str], k: int, alpha: float
) -> list[QueryMarks]:
    """The top-``k`` hits of each query, ranked as ``clasp search`` ranks them."""
    if not queries:
        return []
    query_emb = embed_texts(model, list(queries))
    lexical = lexical_index(index.meta) if alpha > 0 else None
    hits = hybrid_search(index, query_emb, list(queries), k, alpha, lexical)
    return [
        QueryMarks(query, hits.indices[q].cpu().numpy(), hits.scores[q].float().cpu().numpy())
        for q, query in enumerate(queries)
    ]
