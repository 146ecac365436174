"""The search behind ``clasp serve``: one index and its model, loaded once, queried many times.

A query is free text or the bytes of a CIF file. Results are the dicts ``clasp search --json``
prints for one query: ``{"query", "kind", "hits", "alpha", "alpha_source"}`` with the hits of
:func:`~clasp_pl.search.queries.result_rows` (rank, score, cosine, lexical, the index's meta
fields and the ``parts`` that scored). Text is always text here: unlike ``clasp search``, a text
that names a ``.cif`` file on the server's disk is not read as that file.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from pymatgen.io.cif import CifWriter

from clasp_pl.api import embed_texts, load_model
from clasp_pl.search.alpha_store import load_alpha
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex
from clasp_pl.search.queries import embed_queries, result_rows
from clasp_pl.viz.points import index_records_by_id

SearchResult = dict[str, Any]
"""``clasp search --json`` output for one query."""


class InvalidQuery(ValueError):
    """A query that cannot be searched (the message says why)."""


class SearchEngine:
    """An index folder and its model, ready for queries (thread-safe).

    Args:
        index_folder: an index (``clasp embed``, or the default dataset's).
        ckpt: the model (default: the checkpoint recorded in ``index.json``).
        device: where the model and the index live.
        alpha: lexical weight (default: the model's stored value, as ``clasp search``).
    """

    def __init__(
        self,
        index_folder: str | Path,
        ckpt: str | Path | None = None,
        device: str = "cpu",
        alpha: float | None = None,
    ) -> None:
        self.folder = Path(index_folder)
        self.index = EmbeddingIndex(self.folder, device)
        self.ckpt = str(ckpt or self.index.info["checkpoint"])
        self.model = load_model(self.ckpt, device)
        if alpha is None:
            self.alpha, self.alpha_source = load_alpha(self.ckpt)
        else:
            self.alpha, self.alpha_source = alpha, "--alpha"
        self.lexical = lexical_index(self.index.meta) if self.alpha > 0 else None
        self.records = index_records_by_id(self.folder)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def search_text(self, query: str, k: int) -> SearchResult:
        """Top-``k`` hits of a free-text query (hybrid: cosine + alpha * lexical)."""
        with self._lock:
            query_emb = embed_texts(self.model, [query])
            return self._result(query, query, query_emb, k)

    def search_cif(self, data: bytes, name: str, k: int) -> SearchResult:
        """Top-``k`` structures nearest to the structure of a CIF file's bytes.

        Raises:
            InvalidQuery: when the CIF cannot be read (the reader's reason).
        """
        with tempfile.TemporaryDirectory() as folder, self._lock:
            path = Path(folder) / (Path(name).stem or "query")
            path = path.with_suffix(".cif")
            path.write_bytes(data)
            try:
                query_emb, _ = embed_queries(self.model, [str(path)], batch_size=1)
            except ValueError as error:
                reason = str(error).replace(f"{path}: ", "").replace(str(path), name)
                raise InvalidQuery(f"{name}: {reason}") from error
            return self._result(name, None, query_emb, k)

    def cif(self, structure_id: str) -> str | None:
        """CIF text (P1 cell) of an indexed structure; None when the index holds no records
        or no structure of that id."""
        record = self.records.get(structure_id)
        return None if record is None else str(CifWriter(record.to_structure()))

    def _result(
        self, query: str, text: str | None, query_emb: torch.Tensor, k: int
    ) -> SearchResult:
        lexical = self.lexical if text else None
        hits = hybrid_search(self.index, query_emb, [text], k, self.alpha, lexical)
        rows = result_rows(self.index, [text], hits, self.alpha)[0]
        return {
            "query": query,
            "kind": "text" if text else "structure",
            "hits": rows,
            "alpha": self.alpha,
            "alpha_source": self.alpha_source,
        }
