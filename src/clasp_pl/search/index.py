"""An embedding index on disk and exact top-k search over it.

An index is a folder::

    embeddings.npy   [N, D] L2-normalised structure embeddings (float16 or float32)
    meta.jsonl       one line per row: id, formula (reduced), spacegroup, source, title
    index.json       checkpoint (path, sha256 prefix), model summary, dim, dtype, count, created

Search is exact: the query block ``[Q, D]`` is multiplied with the index in chunks of rows, and
each chunk's top ``k`` is merged into a running top ``k``, so memory stays ``O(Q * chunk)`` for
any index size. The index is memory-mapped on the CPU (chunks are read and converted to the
query's dtype as they are scored) or held whole on a GPU.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clasp_pl.data.cache import file_fingerprint
from clasp_pl.errors import UserError
from clasp_pl.models.clasp import CLaSPModule

EMBEDDINGS = "embeddings.npy"
META = "meta.jsonl"
INFO = "index.json"
SCORE_BUDGET = 1 << 24
"""Scores alive at once in :func:`topk_search` (``Q * chunk`` float32 values, 64 MiB)."""
MAX_CHUNK = 1 << 16

IndexRowScores = Callable[[slice], Tensor]
"""``f(index rows) -> [Q, len(rows)]``: scores added to the dot products of all ``Q`` queries
with a block of index rows (blocks of targets, where retrieval metrics take blocks of queries)."""


def checkpoint_sha256(ckpt: str | Path) -> str:
    """The first 16 hex digits of the checkpoint file's sha256 (its identity: a checkpoint
    overwritten in place, like ``last.ckpt``, gets another one)."""
    return file_fingerprint(ckpt)[:16]


def describe_model(ckpt: str | Path, model: CLaSPModule) -> dict[str, Any]:
    """What ``index.json`` records of the model: checkpoint path and sha256 prefix
    (:func:`checkpoint_sha256`), and the text, crystal, graph and head settings from its
    hyper-parameters."""
    settings = {
        name: asdict(value) if is_dataclass(value) else value
        for name, value in model.hparams.items()
        if name in ("text", "crystal", "graph", "heads")
    }
    return {
        "checkpoint": str(Path(ckpt).resolve()),
        "checkpoint_sha256": checkpoint_sha256(ckpt),
        "model": settings,
    }


def write_index(
    folder: str | Path,
    embeddings: Tensor,
    meta: Sequence[dict[str, Any]],
    info: dict[str, Any],
    dtype: str = "float16",
) -> Path:
    """Write an index folder (see the module docstring); returns its path.

    Args:
        folder: output folder (created; existing index files are replaced).
        embeddings: ``[N, D]`` embeddings, L2-normalised again here in float32 before the cast.
        meta: ``[N]`` meta lines (:func:`clasp_pl.search.meta.record_meta`), in the order
            of ``embeddings``.
        info: extra ``index.json`` fields (:func:`describe_model`).
        dtype: ``float16`` (half the disk and memory) or ``float32``.
    """
    if len(meta) != len(embeddings):
        raise ValueError(f"{len(meta)} meta lines for {len(embeddings)} embeddings")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    normalised = torch.nn.functional.normalize(embeddings.detach().float().cpu(), dim=1)
    np.save(folder / EMBEDDINGS, normalised.numpy().astype(dtype))
    with open(folder / META, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in meta)
    summary = {
        **info,
        "dim": int(embeddings.shape[1]),
        "dtype": dtype,
        "count": len(meta),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return folder


def topk_search(
    queries: Tensor,
    index: np.ndarray | Tensor,
    k: int,
    chunk_size: int | None = None,
    extra_scores: IndexRowScores | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` of ``queries @ index.T (+ extra_scores)``, scored in chunks of index rows.

    Args:
        queries: ``[Q, D]`` query embeddings; scoring runs on their device and in their dtype.
        index: ``[N, D]`` index embeddings (a numpy array or memmap, or a tensor).
        k: hits per query (fewer when ``N < k``).
        chunk_size: index rows scored at once (default: ``SCORE_BUDGET / Q``, at most 65,536).
        extra_scores: optional additive scores of each chunk (e.g. lexical, for hybrid search).

    Returns:
        ``(scores, indices)``, each ``[Q, min(k, N)]``, by descending score; among equal scores
        within the top ``k`` the smaller index comes first.
    """
    n_queries, n_rows = queries.shape[0], index.shape[0]
    k = min(k, n_rows)
    chunk_size = chunk_size or min(MAX_CHUNK, max(1024, SCORE_BUDGET // max(n_queries, 1)))
    best = queries.new_empty((n_queries, 0))
    best_index = torch.empty((n_queries, 0), dtype=torch.long, device=queries.device)
    for start in range(0, n_rows, chunk_size):
        rows = slice(start, min(start + chunk_size, n_rows))
        scores = queries @ _rows(index, rows, queries).T
        if extra_scores is not None:
            scores += extra_scores(rows)
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        merged = torch.cat([best, top.values], dim=1)
        merged_index = torch.cat([best_index, top.indices + start], dim=1)
        keep = merged.topk(min(k, merged.shape[1]), dim=1)
        best, best_index = keep.values, merged_index.gather(1, keep.indices)
    by_index, order = best_index.sort(dim=1)
    best, order2 = best.gather(1, order).sort(dim=1, descending=True, stable=True)
    return best, by_index.gather(1, order2)


def _rows(index: np.ndarray | Tensor, rows: slice, like: Tensor) -> Tensor:
    """``index[rows]`` as a tensor on ``like``'s device and in its dtype."""
    block = index[rows]
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(np.array(block, dtype=np.float32))
    return block.to(like.device, like.dtype)


class IndexFolderError(UserError):
    """An index folder that is missing or not an index."""

    kind = "index"


class EmbeddingIndex:
    """An index folder opened for search.

    Attributes:
        folder: the index folder.
        embeddings: ``[N, D]``: a read-only memmap on the CPU, or a tensor on a GPU.
        meta: ``[N]`` meta lines (dicts).
        info: the ``index.json`` fields.
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        self.folder = Path(folder)
        if not (self.folder / INFO).is_file():
            reason = "no such folder" if not self.folder.exists() else f"no {INFO} in this folder"
            raise IndexFolderError(self.folder, reason, "build the index with `clasp embed`")
        self.info: dict[str, Any] = json.loads((self.folder / INFO).read_text())
        self.embeddings: np.ndarray | Tensor = np.load(self.folder / EMBEDDINGS, mmap_mode="r")
        if torch.device(device).type != "cpu":
            self.embeddings = torch.from_numpy(np.array(self.embeddings)).to(device)
        with open(self.folder / META, encoding="utf-8") as handle:
            self.meta: list[dict[str, Any]] = [json.loads(line) for line in handle if line.strip()]
        if len(self.meta) != self.embeddings.shape[0]:
            raise ValueError(f"{self.folder}: {len(self.meta)} meta lines for {len(self)} rows")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def search(
        self, queries: Tensor, k: int = 10, extra_scores: IndexRowScores | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(scores, indices)``, each ``[Q, min(k, N)]``, of ``queries [Q, D]``
        (see :func:`topk_search`)."""
        return topk_search(queries, self.embeddings, k, extra_scores=extra_scores)
