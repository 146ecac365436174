"""Frozen CHGNet crystal features: a pretrained crystal encoder as an optional extra.

CHGNet (``pip install clasp_pl[chgnet]``; BSD-3, the pretrained weights ship inside the wheel,
so nothing is downloaded) is a graph network trained on the Materials Project relaxation
trajectories. Its crystal feature is the pooled readout of the last atom-convolution layer, the
vector the energy head reads (``return_crystal_feas=True`` with ``task="e"``): ``[64]`` per
structure, float32. :class:`ChgnetFeatures` computes it for batches of structures in eval mode
without gradients; :func:`build_chgnet_feature_store` caches one ``[1, 64]`` row per record
(with its ``valid`` flag, :func:`~clasp_pl.data.featurize.feature_row_item`), like the frozen
text features, keyed by the chgnet version, the model name and a fingerprint of its weights.

Disorder: CHGNet takes ordered structures only. A disordered record is given as its ordered
approximation :meth:`~clasp_pl.data.records.CrystalRecord.to_ordered_structure` (every site its
dominant element at full occupancy; the record itself keeps its disorder), and any other
structure as :func:`ordered_approximation`, the same stand-in. The store's key says so
(``"structure": "ordered-dominant"``).

A structure CHGNet cannot read (an atom with no neighbour within its 6 Å cutoff, an element
beyond Pu, Z = 94) is a ``featurization_failed`` reject, stored as a row of NaN (its ``valid``
flag false) so the store keeps one item per record. A batch whose forward pass fails is rerun one
structure at a time, so only the structures that fail are lost.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from clasp_pl.data.cache import ArrayStore, ShardResult
from clasp_pl.data.featurize import (
    FEATURE_ROW_FORMAT,
    IndexedLines,
    RecordSource,
    build_record_store,
    feature_row_item,
)
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.rejects import Reject
from clasp_pl.errors import UserError

CHGNET_DIM = 64
"""Width of CHGNet's crystal feature (the pooled atom features of its last layer)."""
CHGNET_MAX_Z = 94
"""CHGNet's elements: Z = 1 (H) to 94 (Pu); its composition model has no slot for heavier ones."""
CHGNET_FEATURE_VERSION = 1
DEFAULT_CHGNET_MODEL = "0.3.0"
"""The pretrained CHGNet shipped in the wheel (MPtrj, the library's default)."""


class ChgnetMissing(UserError):
    """The optional ``chgnet`` package is not installed."""

    kind = "extra"


def chgnet_model_class() -> type:
    """chgnet's ``CHGNet`` class (imported on first use: chgnet is an optional extra).

    Raises:
        ChgnetMissing: chgnet is not installed, with the command that installs it.
    """
    try:
        from chgnet.model import CHGNet
    except ImportError as error:
        raise ChgnetMissing(
            "chgnet",
            f"the chgnet package is not installed ({error})",
            "pip install clasp_pl[chgnet]",
        ) from None
    return CHGNet


def load_chgnet(model_name: str = DEFAULT_CHGNET_MODEL) -> Any:
    """The pretrained CHGNet ``model_name`` on the CPU, in eval mode with frozen weights.

    Raises:
        ChgnetMissing: chgnet is not installed.
    """
    model = chgnet_model_class().load(model_name=model_name, use_device="cpu", verbose=False)
    model.eval().requires_grad_(False)
    return model


@functools.lru_cache(maxsize=2)
def shared_chgnet(model_name: str) -> Any:
    """:func:`load_chgnet`, once per process and model name (a worker that unpickles many
    :class:`ChgnetFeatures`, one per task, loads the weights once)."""
    return load_chgnet(model_name)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) over a model's parameters and buffers, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def ordered_approximation(structure: Structure) -> Structure:
    """``structure`` itself when ordered; else the stand-in CHGNet can read: every site its
    dominant element (largest occupancy, the first listed on a tie) at full occupancy, as
    :meth:`~clasp_pl.data.records.CrystalRecord.to_ordered_structure` gives for a record."""
    if structure.is_ordered:
        return structure
    species = [max(site.species.items(), key=lambda item: item[1])[0] for site in structure]
    return Structure(structure.lattice, species, structure.frac_coords)


class ChgnetFeatures:
    """CHGNet crystal features of structures, ``[N, 64]`` float32, batched, no gradients.

    Args:
        model_name: which pretrained CHGNet (see ``CHGNet.load``).
        batch_size: structures per forward pass.
        threads: torch intra-op threads while computing (restored after); None leaves the
            process's setting. On a busy machine one thread per process is several times faster
            than two that contend (measured in ``bench/results.md``).
    """

    def __init__(
        self, model_name: str = DEFAULT_CHGNET_MODEL, batch_size: int = 32, threads: int | None = 1
    ):
        self.model_name = model_name
        self.batch_size = batch_size
        self.threads = threads

    @functools.cached_property
    def model(self) -> Any:
        return shared_chgnet(self.model_name)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the loaded model (a worker process loads its own)."""
        return {k: v for k, v in vars(self).items() if k != "model"}

    def identity(self) -> dict[str, str]:
        """What the features depend on: chgnet's version, the model name and its weights."""
        import chgnet

        return {
            "chgnet_version": chgnet.__version__,
            "chgnet_model": self.model_name,
            "weights": weights_fingerprint(self.model),
        }

    def graphs(self, structures: Sequence[Structure]) -> tuple[dict[int, Any], dict[int, str]]:
        """CHGNet graphs of the structures that have one, and why each other one has none, both
        by position in ``structures``."""
        graphs, failures = {}, {}
        for index, structure in enumerate(structures):
            try:
                beyond = max(structure.atomic_numbers, default=0)
                if beyond > CHGNET_MAX_Z:
                    raise ValueError(f"element Z={beyond} is beyond CHGNet's Z <= {CHGNET_MAX_Z}")
                graphs[index] = self.model.graph_converter(structure)
            except Exception as error:  # noqa: BLE001 - one structure's failure is reported
                failures[index] = f"{type(error).__name__}: {error}"
        return graphs, failures

    def __call__(self, structures: Sequence[Structure]) -> tuple[np.ndarray, dict[int, str]]:
        """Crystal features ``[len(structures), 64]`` float32 (ordered structures only); a row
        whose graph cannot be built is NaN and its reason is in the returned dict."""
        with self._threads():
            return self._compute(structures)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _compute(self, structures: Sequence[Structure]) -> tuple[np.ndarray, dict[int, str]]:
        graphs, failures = self.graphs(structures)
        features = np.full((len(structures), CHGNET_DIM), np.nan, np.float32)
        positions = list(graphs)
        with torch.inference_mode():
            for start in range(0, len(positions), self.batch_size):
                batch = positions[start : start + self.batch_size]
                try:
                    features[batch] = self._forward([graphs[i] for i in batch])
                except Exception:  # noqa: BLE001 - one by one: only the failing ones are lost
                    for index in batch:
                        try:
                            features[index] = self._forward([graphs[index]])[0]
                        except Exception as error:  # noqa: BLE001 - reported as a reject
                            failures[index] = f"{type(error).__name__}: {error}"
        return features, dict(sorted(failures.items()))

    def _forward(self, graphs: list[Any]) -> np.ndarray:
        """``[len(graphs), 64]`` float32 crystal features of CHGNet graphs."""
        out = self.model(graphs, task="e", return_crystal_feas=True)
        return out["crystal_fea"].float().numpy()

    def of_structure(self, structure: Structure) -> np.ndarray:
        """The ``[64]`` float32 feature of one structure (its :func:`ordered_approximation`).

        Raises:
            ValueError: CHGNet cannot build its graph (an isolated atom, an unknown element).
        """
        features, failures = self([ordered_approximation(structure)])
        if failures:
            raise ValueError(f"chgnet: {failures[0]}")
        return features[0]


class _ChgnetShard:
    """One ``[1, 64]`` row per record of a shard (NaN and not valid where CHGNet fails: a
    reject)."""

    def __init__(self, features: ChgnetFeatures):
        self.features = features

    def __call__(self, indexed_lines: IndexedLines) -> ShardResult:
        records = [CrystalRecord.from_json(line) for _, line in indexed_lines]
        features, failures = self.features([r.to_ordered_structure() for r in records])
        rejects = [
            Reject(records[i].source, records[i].id, "featurization_failed", f"chgnet: {reason}")
            for i, reason in sorted(failures.items())
        ]
        return ShardResult([feature_row_item(row) for row in features], rejects)


def build_chgnet_feature_store(
    records: str | Path | RecordSource,
    root: str | Path,
    model_name: str = DEFAULT_CHGNET_MODEL,
    batch_size: int = 32,
    workers: int = 1,
    threads: int | None = 1,
    shard_size: int = 512,
) -> tuple[ArrayStore, list[Reject]]:
    """Build or reuse the store of CHGNet crystal features, one ``[1, 64]`` float32 row per
    record (records-file order; NaN and not ``valid`` for a rejected record, see
    :func:`~clasp_pl.data.featurize.feature_row_item`); returns it and this call's rejects.

    Keyed by the chgnet version, model name and weights fingerprint, and the structure given
    (the ordered approximation of a disordered record). ``workers`` processes compute shards
    (each loads the model once), each with ``threads`` torch threads (see
    :class:`ChgnetFeatures`); shards of ``shard_size`` records make a killed build resume.

    Raises:
        ChgnetMissing: chgnet is not installed.
    """
    features = ChgnetFeatures(model_name, batch_size, threads)
    key = {
        "what": "chgnet-crystal-features",
        "version": CHGNET_FEATURE_VERSION,
        "row_format": FEATURE_ROW_FORMAT,
        "dim": CHGNET_DIM,
        "structure": "ordered-dominant",
        **features.identity(),
    }
    shard_fn = _ChgnetShard(features)
    desc = "chgnet features"
    return build_record_store(records, root, shard_fn, key, desc, workers, shard_size)
