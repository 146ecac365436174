"""Batches: what collate makes of cached samples, and what the towers and LightningModules read.

Sizes: ``B`` crystals (one caption each in a pair batch), ``N`` sites (graph nodes), ``M``
(site, element) species entries (``M = N`` when every crystal is ordered) and ``E`` directed edges
over the whole batch, ``L`` tokens of the longest caption, ``H`` the text tower's width.
Samples are store items (:mod:`clasp_pl.data.cache`): dicts of numpy arrays, one per field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from clasp_pl.text.tokens import pad_token_ids

Sample = Mapping[str, np.ndarray]


class GraphBatch(TypedDict):
    """Crystal graphs stacked PyG-style: sites concatenated, edge and site indices offset per
    crystal.

    Keys:
        site_species_z: ``[M]`` int64, Z of each species entry (a site's entries are
            consecutive; an ordered site has one).
        site_occupancy: ``[M]`` float32, its occupancy in (0, 1] (1 on an ordered site; a
            site's occupancies sum to at most 1, the rest being a vacancy).
        species_site: ``[M]`` int64, batch-level index (``0..N-1``) of each entry's site.
        edge_src: ``[E]`` int64, batch-level index of each directed edge's centre site.
        edge_dst: ``[E]`` int64, batch-level index of its neighbour site.
        edge_dist: ``[E]`` float32, edge length in Å.
        crystal_index: ``[N]`` int64, the crystal (``0..B-1``) of each site.
        num_crystals: ``B``.
    """

    site_species_z: Tensor
    site_occupancy: Tensor
    species_site: Tensor
    edge_src: Tensor
    edge_dst: Tensor
    edge_dist: Tensor
    crystal_index: Tensor
    num_crystals: int


class _CachedFeatures(TypedDict, total=False):
    text_features: Tensor
    composition_features: Tensor
    chgnet_features: Tensor


class _CachedTokenStates(TypedDict, total=False):
    text_hidden: Tensor


class PairBatch(GraphBatch, _CachedFeatures, _CachedTokenStates):
    """(crystal, caption) pairs: :class:`GraphBatch`'s keys plus

    Keys:
        input_ids: ``[B, L]`` int64 caption tokens, right-padded with the pad token.
        attention_mask: ``[B, L]`` int64, 1 on tokens, 0 on padding.
        group_ids: ``[B]`` int64 paper ids; pairs of one paper are mutual positives.
        record_index: ``[B]`` int64 position of each pair's record in the records file.
        item_id: ``[B]`` int64 graph-store position, unique per sample (drops the padding
            duplicates of a ``DistributedSampler`` in evaluation).
        text_features: optional ``[B, H]`` float32, cached outputs of a frozen text tower
            (the model then skips its text tower).
        composition_features: optional ``[B, 333]`` float32 descriptors, for the
            composition-only baseline tower.
        chgnet_features: optional ``[B, 64]`` float32 frozen CHGNet crystal features
            (:mod:`clasp_pl.data.chgnet_features`), for the ``chgnet`` crystal tower.
        text_hidden: optional ``[B, L, H]`` float32, cached hidden states after the frozen
            lower layers of a partly trainable text tower, one per token of ``input_ids`` (0 on
            padding); the model then runs only the top layers.
    """

    input_ids: Tensor
    attention_mask: Tensor
    group_ids: Tensor
    record_index: Tensor
    item_id: Tensor


class PropertyBatch(GraphBatch):
    """Crystals with one property each: :class:`GraphBatch`'s keys plus

    Keys:
        record_index: ``[B]`` int64 position of each crystal's record in the records file.
        targets: ``[B]`` float32 values in the target's units (regression) or int64 class
            indices (classification).
    """

    record_index: Tensor
    targets: Tensor


CACHED_FEATURES = tuple(_CachedFeatures.__annotations__)  # per-record features a pair may carry


def pad_token_states(states: Sequence[np.ndarray], length: int) -> Tensor:
    """Per-token states ``[n_i, H]`` right-padded with zeros to ``[B, length, H]`` float32."""
    out = np.zeros((len(states), length, states[0].shape[1]), np.float32)
    for row, one in enumerate(states):
        out[row, : len(one)] = one
    return torch.from_numpy(out)


GRAPH_FIELD = "edge_src"  # present in a sample that carries its crystal graph


def _concat(samples: Sequence[Sample], name: str, dtype: type = np.int64) -> Tensor:
    return torch.from_numpy(np.concatenate([s[name] for s in samples]).astype(dtype))


def collate_graphs(samples: Sequence[Sample]) -> GraphBatch:
    """Stack crystal graphs into one :class:`GraphBatch`.

    Each sample needs the fields of :class:`~clasp_pl.data.graphs.CrystalGraph`:
    ``site_species_z``, ``site_occupancy [m]``, ``species_per_site [n]``, ``edge_src``,
    ``edge_dst`` (site indices inside its crystal) and ``edge_dist [e]`` (Å).
    """
    species_per_site = np.concatenate([s["species_per_site"] for s in samples]).astype(np.int64)
    sites_per_crystal = np.array([len(s["species_per_site"]) for s in samples])
    site_offsets = np.r_[0, np.cumsum(sites_per_crystal)[:-1]]
    edges_per_crystal = np.array([len(s["edge_src"]) for s in samples])
    edge_offset = torch.from_numpy(np.repeat(site_offsets, edges_per_crystal))
    return GraphBatch(
        site_species_z=_concat(samples, "site_species_z"),
        site_occupancy=_concat(samples, "site_occupancy", np.float32),
        species_site=torch.from_numpy(
            np.repeat(np.arange(len(species_per_site)), species_per_site)
        ),
        edge_src=_concat(samples, "edge_src") + edge_offset,
        edge_dst=_concat(samples, "edge_dst") + edge_offset,
        edge_dist=_concat(samples, "edge_dist", np.float32),
        crystal_index=torch.from_numpy(np.repeat(np.arange(len(samples)), sites_per_crystal)),
        num_crystals=len(samples),
    )


def collate_pairs(samples: Sequence[Sample], pad_token_id: int = 0) -> PairBatch:
    """Stack (graph, caption) samples into one :class:`PairBatch`, captions padded to the
    longest one; ``text_features``, ``composition_features`` and ``chgnet_features`` when the
    samples carry them, and ``text_hidden`` (``[n_tokens, H]`` per sample, one row per token)
    padded like the tokens.

    Each sample needs the graph fields of :func:`collate_graphs`, ``input_ids [n_tokens]``,
    ``group_id [1]``, ``record_index [1]`` and ``item_id [1]``. Samples without graph fields
    (``data.crystal_graphs: false``, for a tower that reads only per-record features) give a
    batch without them, with ``num_crystals`` still set.
    """
    input_ids, attention_mask = pad_token_ids([s["input_ids"] for s in samples], pad_token_id)
    graphs = collate_graphs(samples) if GRAPH_FIELD in samples[0] else {}
    graphs.setdefault("num_crystals", len(samples))
    batch = PairBatch(
        **graphs,
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention_mask),
        group_ids=_concat(samples, "group_id"),
        record_index=_concat(samples, "record_index"),
        item_id=_concat(samples, "item_id"),
    )
    for name in CACHED_FEATURES:
        if name in samples[0]:
            batch[name] = _concat(samples, name, np.float32)
    if "text_hidden" in samples[0]:
        states = [s["text_hidden"] for s in samples]
        if any(len(h) != len(s["input_ids"]) for h, s in zip(states, samples, strict=True)):
            raise ValueError("cached text hidden states do not match the caption tokens")
        batch["text_hidden"] = pad_token_states(states, input_ids.shape[1])
    return batch
