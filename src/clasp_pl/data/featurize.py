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
  record (see :mod:`clasp_pl.data.composition`); all NaN for a record whose descriptor fails.

A record whose graph or descriptor cannot be computed is a ``featurization_failed`` reject (the
``build_*`` functions that featurize structures return them), never the end of the build.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clasp_pl.data.cache import ArrayStore, ShardFn, build_store, file_fingerprint
from clasp_pl.data.composition import (
    COMPOSITION_DIM,
    COMPOSITION_FORMAT_VERSION,
    composition_features,
)
from clasp_pl.data.graphs import GraphConfig, structure_to_graph
from clasp_pl.data.records import CrystalRecord, iter_record_lines, stable_hash64
from clasp_pl.data.text import CAPTION_FORMAT_VERSION, compose_caption
from clasp_pl.text.features import FrozenTextFeatures
from clasp_pl.text.sources import load_tokenizer, resolve
from clasp_pl.text.tokens import encode_captions
from clasp_pl.text.tower import TextTower

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


def featurize_records(
    indexed_lines: Sequence[tuple[int, str]],
    featurize: Callable[[int, CrystalRecord], dict],
    placeholder: dict | None = None,
) -> list[dict]:
    """``featurize(record_index, record)`` for each record of a shard of ``(record_index,
    record_json)``. A record it fails on becomes a ``featurization_failed`` reject, left out of
    the store, or stored as ``placeholder`` (for stores with one item per record)."""
    items = []
    for index, line in indexed_lines:
        record = CrystalRecord.from_json(line)
        try:
            items.append(featurize(index, record))
        except Exception as error:  # noqa: BLE001 - any failure of one record is a reject
            reject = {
                "id": record.id,
                "source": record.source,
                "reason": "featurization_failed",
                "message": str(error),
            }
            items.append({**(placeholder or {}), "__reject__": reject})
    return items


def _graph_item(config: GraphConfig, index: int, record: CrystalRecord) -> dict:
    """Graph item of record ``index``: ``atomic_numbers [N]``, ``edge_src``, ``edge_dst``,
    ``edge_dist [E]`` (Å), ``record_index [1]`` and ``group_id [1]``."""
    graph = structure_to_graph(record.to_structure(), config)
    return {
        "atomic_numbers": graph.atomic_numbers,
        "edge_src": graph.edge_src,
        "edge_dst": graph.edge_dst,
        "edge_dist": graph.edge_dist,
        "record_index": np.array([index], np.int64),
        "group_id": np.array([stable_hash64(record.group)], np.int64),
    }


def graph_shard(config: GraphConfig, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
    """Crystal graphs of one shard of ``(record_index, record_json)``; failures are rejects."""
    return featurize_records(indexed_lines, functools.partial(_graph_item, config))


def build_graph_store(
    records_path: str | Path,
    root: str | Path,
    config: GraphConfig,
    workers: int = 1,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> tuple[ArrayStore, list[dict]]:
    """Build or reuse the crystal-graph store of a records file.

    Keyed by the cutoff radius and neighbour count only: the stored graphs keep distances (Å),
    which the model expands into its Gaussian basis, so the basis settings do not rebuild them.
    """
    key = {
        "what": "cgcnn-graphs",
        "version": GRAPH_FORMAT_VERSION,
        "radius": config.radius,
        "max_neighbors": config.max_neighbors,
    }
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


def _composition_item(symprec: float, index: int, record: CrystalRecord) -> dict:
    """Descriptor item of a record: ``features [1, COMPOSITION_DIM]`` float32."""
    return {"features": composition_features(record.to_structure(), symprec)[None]}


def composition_shard(symprec: float, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
    """Descriptors ``[1, COMPOSITION_DIM]`` of one shard of ``(record_index, record_json)``, one
    item per record; a record whose descriptor fails is a reject stored as all NaN."""
    placeholder = {"features": np.full((1, COMPOSITION_DIM), np.nan, np.float32)}
    return featurize_records(
        indexed_lines, functools.partial(_composition_item, symprec), placeholder
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
        return [
            {"input_ids": ids} for ids in encode_captions(self.tokenizer, captions, self.max_length)
        ]


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
        "caption_format": CAPTION_FORMAT_VERSION,
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
    """Runs a frozen text tower over shards of captions: one ``[1, H]`` item per record."""

    def __init__(
        self, features: FrozenTextFeatures, caption_fields: Sequence[str], max_length: int
    ):
        super().__init__(features.text_model_name, caption_fields, max_length)
        self.features = features

    def __call__(self, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
        token_ids = [item["input_ids"] for item in super().__call__(indexed_lines)]
        rows = self.features(token_ids, self.tokenizer.pad_token_id or 0)
        return [{"features": row[None]} for row in rows]


def build_text_feature_store(
    records_path: str | Path,
    root: str | Path,
    tower: TextTower,
    caption_fields: Sequence[str],
    max_length: int,
    batch_size: int = 128,
    shard_size: int = 2048,
    lines: list[str] | None = None,
    source: str | None = None,
) -> ArrayStore:
    """Build or reuse the store of a frozen text tower's pooled outputs, one ``[1, H]`` item per
    record, keyed by the tower's weights fingerprint, pooling, caption fields and max_length."""
    features = FrozenTextFeatures(tower, batch_size)
    key = {
        "what": "frozen-text-features",
        **features.identity(),
        "caption_format": CAPTION_FORMAT_VERSION,
        "caption_fields": list(caption_fields),
        "max_length": max_length,
    }
    store, _ = build_record_store(
        records_path,
        root,
        _TextFeatureShard(features, caption_fields, max_length),
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
) -> tuple[ArrayStore, list[dict]]:
    """Build or reuse the store of composition/symmetry descriptors (composition-only baseline),
    one ``[1, COMPOSITION_DIM]`` item per record; returns it and this call's rejects."""
    key = {
        "what": "composition-features",
        "version": COMPOSITION_FORMAT_VERSION,
        "dim": COMPOSITION_DIM,
        "symprec": symprec,
    }
    return build_record_store(
        records_path,
        root,
        functools.partial(composition_shard, symprec),
        key=key,
        desc="composition features",
        workers=workers,
        shard_size=shard_size,
        lines=lines,
        source=source,
    )
