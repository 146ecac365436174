"""CGCNN crystal graphs: atoms as nodes, the nearest periodic neighbours as directed edges.

Each atom is connected to its ``max_neighbors`` nearest neighbours (periodic images included)
within ``radius`` Å, found by pymatgen's compiled neighbour list in vectorised numpy (no per-atom
Python loops). Atoms keep only their atomic number here; the 92-d CGCNN atom features are looked
up in the model, and edge distances are expanded into Gaussians on the fly, so cached graphs stay
compact (one ``uint8`` per atom, one ``int32`` pair and one ``float32`` distance per edge).

Isolated atoms (no neighbour inside the cutoff, e.g. a molecule in a huge cell) are kept with one
self-loop edge at distance ``radius``: the Gaussian expansion puts it at the far end of the basis,
so the atom's convolution sees itself only, which is CGCNN's padding convention made explicit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

CGCNN_MAX_Z = 100  # CGCNN's atom_init table covers Z = 1..100


@dataclass(frozen=True)
class GraphConfig:
    """How crystal graphs are built.

    Attributes:
        radius: neighbour cutoff in Å.
        max_neighbors: neighbours kept per atom (the nearest ones).
        gaussian_step: spacing of the Gaussian distance basis in Å (used by the model).
        gaussian_width: width of each Gaussian in Å (used by the model).
    """

    radius: float = 8.0
    max_neighbors: int = 12
    gaussian_step: float = 0.2
    gaussian_width: float = 0.2


@dataclass
class CrystalGraph:
    """One crystal as a graph.

    Attributes:
        atomic_numbers: ``[n_atoms]`` uint8.
        edge_src: ``[n_edges]`` int32, the centre atom of each edge.
        edge_dst: ``[n_edges]`` int32, the neighbour atom (index inside this crystal).
        edge_dist: ``[n_edges]`` float32, distance in Å.
    """

    atomic_numbers: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_dist: np.ndarray


def nearest_neighbor_edges(
    centers: np.ndarray, distances: np.ndarray, max_neighbors: int, tie_tolerance: float = 1e-4
) -> np.ndarray:
    """Indices of the shortest edges of every centre, sorted by (centre, distance).

    Each centre keeps its ``max_neighbors`` nearest edges *and every edge tied with the last one*
    (within ``tie_tolerance`` Å). Cutting a shell of equidistant neighbours in two would make the
    graph depend on atom order and on the choice of unit cell; keeping the whole shell does not.

    Args:
        centers: ``[E]`` centre index of each candidate edge.
        distances: ``[E]`` edge lengths in Å.
        max_neighbors: how many edges to keep per centre (more when the last shell is tied).
        tie_tolerance: distances closer than this (Å) count as tied.

    Returns:
        ``[E_kept]`` indices into the candidate edges.
    """
    n = len(centers)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # one float key sorts by centre, then distance (3x faster than np.lexsort on two keys)
    order = np.argsort(centers * (float(distances.max()) + 1.0) + distances)
    sorted_centers, sorted_dist = centers[order], distances[order]
    is_first = np.r_[True, sorted_centers[1:] != sorted_centers[:-1]]
    starts = np.flatnonzero(is_first)
    ends = np.r_[starts[1:], n]
    kth_position = np.minimum(starts + max_neighbors, ends) - 1
    kth_dist = np.repeat(sorted_dist[kth_position], ends - starts)
    return order[sorted_dist <= kth_dist + tie_tolerance]


def structure_to_graph(structure: Structure, config: GraphConfig) -> CrystalGraph:
    """Build the CGCNN graph of an ordered structure.

    Raises:
        ValueError: for an element beyond Z = 100 (no CGCNN atom features exist for it).
    """
    numbers = np.array(structure.atomic_numbers, dtype=np.int64)
    if numbers.max(initial=0) > CGCNN_MAX_Z:
        raise ValueError(f"element with Z={numbers.max()} has no CGCNN atom features (Z <= 100)")
    centers, neighbors, _images, distances = structure.get_neighbor_list(
        config.radius, exclude_self=True
    )
    keep = nearest_neighbor_edges(centers, distances, config.max_neighbors)
    src, dst, dist = centers[keep], neighbors[keep], distances[keep]
    isolated = np.flatnonzero(np.bincount(src, minlength=len(numbers)) == 0)
    if isolated.size:
        src = np.concatenate([src, isolated])
        dst = np.concatenate([dst, isolated])
        dist = np.concatenate([dist, np.full(isolated.size, config.radius)])
        order = np.argsort(src, kind="stable")
        src, dst, dist = src[order], dst[order], dist[order]
    return CrystalGraph(
        atomic_numbers=numbers.astype(np.uint8),
        edge_src=src.astype(np.int32),
        edge_dst=dst.astype(np.int32),
        edge_dist=dist.astype(np.float32),
    )


@lru_cache(maxsize=1)
def cgcnn_atom_features() -> np.ndarray:
    """CGCNN's 92-d one-hot atom descriptors as shipped by matminer.

    Returns:
        ``[101, 92]`` float32; row ``Z`` holds element ``Z``'s features, row 0 is zeros.
    """
    source = resources.files("matminer") / "utils" / "data_files" / "cgcnn_atom_feature.json"
    table = json.loads(Path(str(source)).read_text())
    features = np.zeros((CGCNN_MAX_Z + 1, len(next(iter(table.values())))), np.float32)
    for z, row in table.items():
        features[int(z)] = row
    return features
