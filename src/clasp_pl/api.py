"""Python API for notebooks: load a trained CLaSP model and embed texts and structures.

Example::

    from clasp_pl.api import embed_structures, embed_texts, load_model, score

    model = load_model("runs/pretrain/checkpoints/last.ckpt")
    structures = embed_structures(model, records)            # [N, D]
    queries = embed_texts(model, ["layered cobalt oxide"])   # [1, D]
    similarity = score(queries, structures)                  # [1, N] cosine similarities

Embeddings are L2-normalised (the model's projection heads normalise), so dot products are
cosine similarities. Every function runs without gradients on the model's device and returns
tensors on that device; pass a model in eval mode (:func:`load_model` returns one).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from pymatgen.core import Structure
from torch import Tensor

from clasp_pl.checkpoints import CheckpointSettings, read_settings
from clasp_pl.config_utils import as_config
from clasp_pl.data.batch import collate_graphs
from clasp_pl.data.chgnet_features import ChgnetFeatures, chgnet_model_class
from clasp_pl.data.composition import composition_features
from clasp_pl.data.graphs import CrystalGraph, GraphConfig, structure_to_graph
from clasp_pl.data.records import CrystalRecord
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig
from clasp_pl.text.sources import load_tokenizer
from clasp_pl.text.tokens import encode_captions, pad_token_ids

DEFAULT_MAX_LENGTH = 256
"""Caption truncation (tokens) for models whose checkpoint does not record one."""


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``: where commands run models by default."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def text_max_length(
    hparams: Mapping[str, Any], data_settings: Mapping[str, Any] | None = None
) -> int:
    """The caption truncation (tokens) a model was trained with: its ``text_max_length``
    hyper-parameter when it has one, else the data module's ``max_length`` recorded in its
    checkpoint (``data_settings``), else :data:`DEFAULT_MAX_LENGTH`."""
    value = hparams.get("text_max_length") or (data_settings or {}).get("max_length")
    return int(value or DEFAULT_MAX_LENGTH)


def load_model(
    ckpt: str | Path,
    device: str | torch.device = "cpu",
    settings: CheckpointSettings | None = None,
) -> CLaSPModule:
    """A trained :class:`CLaSPModule` in eval mode on ``device``.

    Its hyper-parameters hold ``text_max_length`` (:func:`text_max_length`), which
    :func:`embed_texts` uses.

    Args:
        settings: the checkpoint's settings when the caller has read them already
            (:func:`~clasp_pl.checkpoints.read_settings`).

    Raises:
        CheckpointError: the file is missing, corrupt or refused by weights-only loading.
    """
    settings = settings or read_settings(ckpt)
    model = CLaSPModule.load_from_checkpoint(ckpt, map_location=device, weights_only=True)
    model.hparams["text_max_length"] = text_max_length(model.hparams, settings.data)
    return model.eval()


def graph_config(model: CLaSPModule) -> GraphConfig:
    """The crystal-graph settings the model was trained with."""
    return as_config(GraphConfig, model.hparams.graph)


def embed_dim(model: CLaSPModule) -> int:
    """``D``, the dimension of the model's shared embedding space."""
    return as_config(HeadsConfig, model.hparams.heads).embed_dim


@functools.lru_cache(maxsize=4)
def _tokenizer(text_model: str):
    return load_tokenizer(text_model)


@torch.inference_mode()
def embed_texts(
    model: CLaSPModule, texts: Sequence[str], batch_size: int = 256, max_length: int | None = None
) -> Tensor:
    """Text embeddings ``[N, D]`` of ``N`` texts, in input order.

    Texts are tokenized with the model's text tokenizer, truncated to ``max_length`` tokens
    (default: the model's, :func:`text_max_length`) and run in
    batches of similar length (sorted by token count) to minimise padding.
    """
    out = torch.empty(len(texts), embed_dim(model), device=model.device)
    if not texts:
        return out
    tokenizer = _tokenizer(model.text_tower.text_model_name)
    max_length = max_length or text_max_length(model.hparams)
    token_ids = encode_captions(tokenizer, texts, max_length)  # as the caption caches do
    order = sorted(range(len(token_ids)), key=lambda row: len(token_ids[row]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_token_ids([token_ids[r] for r in rows], tokenizer.pad_token_id or 0)
        out[rows] = model.encode_texts(
            torch.from_numpy(ids).to(model.device), torch.from_numpy(mask).to(model.device)
        )
    return out


class CrystalInput(NamedTuple):
    """What a crystal tower reads of one structure.

    Attributes:
        graph: the crystal graph (every tower but the composition-only baseline reads it).
        composition: the ``[333]`` composition/symmetry descriptor
            (:func:`~clasp_pl.data.composition.composition_features`), for the towers that read
            it (:func:`reads_composition`); ``None`` for the others.
        chgnet: the ``[64]`` frozen CHGNet crystal feature of its ordered approximation
            (:meth:`~clasp_pl.data.chgnet_features.ChgnetFeatures.of_structure`), for the
            ``chgnet`` tower (:func:`chgnet_features`); ``None`` for the others.
    """

    graph: CrystalGraph
    composition: np.ndarray | None = None
    chgnet: np.ndarray | None = None


def reads_composition(model: CLaSPModule) -> bool:
    """Whether the model's crystal tower reads composition descriptors (``composition``,
    ``fused``, ``chgnet`` with its composition) besides or instead of the graph."""
    return model.crystal_features.composition


def chgnet_features(model: CLaSPModule) -> ChgnetFeatures | None:
    """What computes the CHGNet features of new structures for a model whose crystal tower reads
    them (the ``chgnet`` tower; its weights load on first use, once per process); ``None`` for
    the other towers.

    Raises:
        ChgnetMissing: the model reads CHGNet features and chgnet is not installed (checked
            here, before any structure is featurized), with ``pip install clasp_pl[chgnet]``.
    """
    if not model.crystal_features.chgnet:
        return None
    chgnet_model_class()
    return ChgnetFeatures()


def crystal_input(
    structure: Structure,
    config: GraphConfig,
    with_composition: bool,
    chgnet: ChgnetFeatures | None = None,
) -> CrystalInput:
    """The :class:`CrystalInput` of one structure (graph with the model's ``config``; the
    descriptor ``with_composition``; the CHGNet feature when ``chgnet`` is given, see
    :func:`chgnet_features`).

    Raises:
        ValueError: for a structure that cannot become a graph or descriptor (an element
            beyond Z = 100), or whose CHGNet graph cannot be built.
    """
    graph = structure_to_graph(structure, config)
    return CrystalInput(
        graph,
        composition_features(structure) if with_composition else None,
        chgnet.of_structure(structure) if chgnet is not None else None,
    )


def embed_structures(
    model: CLaSPModule,
    structures_or_records: Iterable[Structure | CrystalRecord],
    batch_size: int = 128,
) -> Tensor:
    """Crystal embeddings ``[N, D]`` of pymatgen structures or records, in input order.

    Graphs are built with the model's own :class:`~clasp_pl.data.graphs.GraphConfig`, and
    composition descriptors and CHGNet features computed for the towers that read them.

    Raises:
        ValueError: for a structure that cannot become a graph (an element beyond Z = 100).
        ChgnetMissing: the model reads CHGNet features and chgnet is not installed.
    """
    config, with_composition = graph_config(model), reads_composition(model)
    chgnet = chgnet_features(model)
    inputs = (
        crystal_input(
            item.to_structure() if isinstance(item, CrystalRecord) else item,
            config,
            with_composition,
            chgnet,
        )
        for item in structures_or_records
    )
    return embed_graphs(model, inputs, batch_size)


@torch.inference_mode()
def embed_graphs(
    model: CLaSPModule, crystals: Iterable[CrystalGraph | CrystalInput], batch_size: int = 128
) -> Tensor:
    """Crystal embeddings ``[N, D]`` of crystal graphs (or :class:`CrystalInput` s, for a tower
    that also reads composition descriptors or CHGNet features), consumed lazily in batches (a stream of millions
    never lives in memory at once), in input order."""
    chunks = []
    for batch in _batches(crystals, batch_size):
        collated = graph_batch(batch)
        inputs = {
            k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in collated.items()
        }
        chunks.append(model.encode_crystals(inputs))
    if not chunks:
        return torch.empty(0, embed_dim(model), device=model.device)
    return torch.cat(chunks)


def graph_batch(crystals: Sequence[CrystalGraph | CrystalInput]) -> dict:
    """Collate graphs into the crystal part of the training batch format, with
    ``composition_features [B, 333]`` and ``chgnet_features [B, 64]`` when the inputs carry
    them."""
    inputs = [c if isinstance(c, CrystalInput) else CrystalInput(c) for c in crystals]
    batch = dict(collate_graphs([vars(item.graph) for item in inputs]))
    if inputs and inputs[0].composition is not None:
        batch["composition_features"] = _stack([item.composition for item in inputs])
    if inputs and inputs[0].chgnet is not None:
        batch["chgnet_features"] = _stack([item.chgnet for item in inputs])
    return batch


def _stack(rows: Sequence[np.ndarray]) -> Tensor:
    """Per-structure feature rows ``[D]`` -> ``[B, D]`` float32."""
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def score(query_emb: Tensor, index_emb: Tensor) -> Tensor:
    """Cosine similarities ``[Q, N]`` of L2-normalised ``query_emb [Q, D]`` and
    ``index_emb [N, D]`` (computed in the query's dtype, on the query's device)."""
    return query_emb @ index_emb.to(query_emb.device, query_emb.dtype).T


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
