"""Records -> cached tensors: crystal graphs and caption token ids, in resumable shards.

Each store is keyed by exactly what it depends on, so changing the tokenizer does not recompute
graphs and changing the cutoff does not re-tokenize. The ``build_*`` functions read the records
file unless given its ``lines`` and a ``source`` fingerprint (the data module passes both, read
once; its fingerprint also covers a keywords file applied to the records):

- ``graphs/``: one item per featurizable record: ``atomic_numbers``, ``edge_src``, ``edge_dst``,
  ``edge_dist`` (Å), ``record_index`` and ``group_id`` (paper id, int64);
- ``tokens/``: one item per record (same order as the records file): ``input_ids`` (int32,
  truncated to ``max_length``, unpadded);
- ``text_features/`` (only for a frozen text tower): one ``[1, H]`` float32 item per record, the
  tower's pooled output computed once in eval mode, so training steps skip the text tower;
- ``composition/`` (only for the composition-only baseline): one ``[1, 333]`` descriptor per
  record (see :mod:`clasp_pl.data.composition`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clasp_pl.data.cache import ArrayStore, ShardFn, build_store, file_fingerprint
from clasp_pl.data.composition import COMPOSITION_DIM, composition_shard
from clasp_pl.data.graphs import GraphConfig, structure_to_graph
from clasp_pl.data.records import CrystalRecord, iter_record_lines, stable_hash64
from clasp_pl.data.text import compose_caption
from clasp_pl.text_models import load_tokenizer, resolve

GRAPH_FORMAT_VERSION = 1


def build_record_store(
    records_path: str | Path,
    root: str | Path,
    shard_fn: ShardFn,
    key: dict,
    desc: str,
    workers: int = 1,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> tuple[ArrayStore, list[dict]]:
    """:func:`build_store` over a records file: inputs are ``(record_index, record_json)``.

    ``lines`` and ``source`` (the records' JSON lines and their fingerprint) default to reading
    and hashing ``records_path``; a caller that already read them passes them in.
    """
    lines = list(iter_record_lines(records_path)) if lines is None else lines
    return build_store(
        root,
        list(enumerate(lines)),
        shard_fn,
        key=key,
        source=source or file_fingerprint(records_path),
        shard_size=shard_size,
        workers=workers,
        desc=desc,
    )


def graph_shard(config: GraphConfig, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
    """Featurize one shard of ``(record_index, record_json)``; failures become rejects."""
    items = []
    for index, line in indexed_lines:
        record = CrystalRecord.from_json(line)
        try:
            graph = structure_to_graph(record.to_structure(), config)
        except Exception as error:  # noqa: BLE001 - any failure of one record is a reject
            items.append(
                {
                    "__reject__": {
                        "id": record.id,
                        "source": record.source,
                        "reason": "featurization_failed",
                        "message": str(error),
                    }
                }
            )
            continue
        items.append(
            {
                "atomic_numbers": graph.atomic_numbers,
                "edge_src": graph.edge_src,
                "edge_dst": graph.edge_dst,
                "edge_dist": graph.edge_dist,
                "record_index": np.array([index], np.int64),
                "group_id": np.array([stable_hash64(record.group)], np.int64),
            }
        )
    return items


def build_graph_store(
    records_path: str | Path,
    root: str | Path,
    config: GraphConfig,
    workers: int = 1,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> tuple[ArrayStore, list[dict]]:
    """Build or reuse the crystal-graph store of a records file."""
    key = {"what": "cgcnn-graphs", "version": GRAPH_FORMAT_VERSION, **config.to_dict()}
    return build_record_store(
        records_path,
        root,
        functools.partial(graph_shard, config),
        key=key,
        desc="crystal graphs",
        workers=workers,
        shard_size=shard_size,
        lines=lines,
        source=source,
    )


class _TokenShard:
    """Tokenizes shards of ``(record_index, record_json)`` with a lazily loaded tokenizer."""

    def __init__(self, text_model: str, caption_fields: Sequence[str], max_length: int):
        self.text_model = text_model
        self.caption_fields = tuple(caption_fields)
        self.max_length = max_length

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.text_model)

    def __call__(self, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
        captions = [
            compose_caption(CrystalRecord.from_json(line), self.caption_fields)
            for _, line in indexed_lines
        ]
        encoded = self.tokenizer(captions, truncation=True, max_length=self.max_length)
        return [{"input_ids": np.asarray(ids, np.int32)} for ids in encoded["input_ids"]]


def build_token_store(
    records_path: str | Path,
    root: str | Path,
    text_model: str,
    caption_fields: Sequence[str],
    max_length: int,
    shard_size: int = 8192,
    lines: list[str] | None = None,
    source: str | None = None,
) -> ArrayStore:
    """Build or reuse the caption-token store of a records file (one item per record)."""
    tokenizer = load_tokenizer(text_model)
    key = {
        "what": "caption-tokens",
        "text_model": resolve(text_model),
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_class": type(tokenizer).__name__,
        "caption_fields": list(caption_fields),
        "max_length": max_length,
    }
    store, _ = build_record_store(
        records_path,
        root,
        _TokenShard(text_model, caption_fields, max_length),
        key=key,
        desc="captions",
        workers=1,
        shard_size=shard_size,
        lines=lines,
        source=source,
    )
    return store


class _TextFeatureShard(_TokenShard):
    """Runs a frozen text tower (eval mode, no grad) over shards of captions."""

    def __init__(self, tower, caption_fields: Sequence[str], max_length: int, batch_size: int):
        super().__init__(tower.text_model_name, caption_fields, max_length)
        self.tower = tower.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
        token_items = super().__call__(indexed_lines)
        lengths = np.array([len(item["input_ids"]) for item in token_items])
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        features = np.zeros((len(token_items), self.tower.out_dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = lengths[rows].max()
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0)
            mask = torch.zeros_like(ids)
            for k, row in enumerate(rows):
                ids[k, : lengths[row]] = torch.from_numpy(
                    token_items[row]["input_ids"].astype(np.int64)
                )
                mask[k, : lengths[row]] = 1
            features[rows] = self.tower(ids, mask).float().numpy()
        return [{"features": row[None]} for row in features]


def build_text_feature_store(
    records_path: str | Path,
    root: str | Path,
    tower,
    caption_fields: Sequence[str],
    max_length: int,
    batch_size: int = 128,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> ArrayStore:
    """Build or reuse the store of a frozen text tower's pooled outputs, one ``[1, H]`` item per
    record, keyed by the tower's weights fingerprint, pooling, caption fields and max_length."""
    key = {
        "what": "frozen-text-features",
        "text_model": resolve(tower.text_model_name),
        "weights": tower.weights_fingerprint(),
        "pooling": tower.pooling,
        "caption_fields": list(caption_fields),
        "max_length": max_length,
    }
    store, _ = build_record_store(
        records_path,
        root,
        _TextFeatureShard(tower, caption_fields, max_length, batch_size),
        key=key,
        desc="frozen text features",
        workers=1,
        shard_size=shard_size,
        lines=lines,
        source=source,
    )
    return store


def build_composition_store(
    records_path: str | Path,
    root: str | Path,
    symprec: float = 0.1,
    workers: int = 1,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> ArrayStore:
    """Build or reuse the store of composition/symmetry descriptors (composition-only baseline),
    one ``[1, COMPOSITION_DIM]`` item per record."""
    store, _ = build_record_store(
        records_path,
        root,
        functools.partial(composition_shard, symprec),
        key={"what": "composition-features", "dim": COMPOSITION_DIM, "symprec": symprec},
        desc="composition features",
        workers=workers,
        shard_size=shard_size,
        lines=lines,
        source=source,
    )
    return store
