"""CGCNN crystal graphs: sites as nodes, the nearest periodic neighbours as directed edges.

Each site is connected to its ``max_neighbors`` nearest neighbours (periodic images included)
within ``radius`` Å, found by pymatgen's compiled neighbour list in vectorised numpy (no per-site
Python loops). Neighbours come from the site coordinates alone, so a disordered site is one node.

A site keeps its species and their occupancies, stored compactly in CSR form: the ``M`` (site,
element) entries of a crystal in site order, and the number of entries of each site. An ordered
site is one entry at occupancy 1; a mixed site such as ``{Sn: 0.9, In: 0.07}`` is two entries, and
the missing weight (0.03) is a vacancy. The 92-d CGCNN atom features are looked up in the model
(a site's feature is the occupancy-weighted sum of its elements' rows) and edge distances are
expanded into Gaussians on the fly, so cached graphs stay compact (one ``uint8`` per site, one
``uint8`` Z and one ``float32`` occupancy per entry, one ``int32`` pair and one ``float32``
distance per edge).

Isolated sites (no neighbour inside the cutoff, e.g. a molecule in a huge cell) are kept with one
self-loop edge at distance ``radius``: the Gaussian expansion puts it at the far end of the basis,
so the site's convolution sees itself only, which is CGCNN's padding convention made explicit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from pymatgen.core import DummySpecies, Structure

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
    """One crystal as a graph of ``N`` sites, ``M`` (site, element) entries and ``E`` edges.

    Attributes:
        site_species_z: ``[M]`` uint8, Z of each entry; a site's entries are consecutive, in
            site order, its dominant element first.
        site_occupancy: ``[M]`` float32, the occupancy of each entry, in (0, 1]; a site's
            occupancies sum to at most 1 (the rest is a vacancy).
        species_per_site: ``[N]`` uint8, entries of each site (1 for an ordered site; at most
            100, one per element of the atom table).
        edge_src: ``[E]`` int32, the centre site of each edge.
        edge_dst: ``[E]`` int32, the neighbour site (index inside this crystal).
        edge_dist: ``[E]`` float32, distance in Å.
    """

    site_species_z: np.ndarray
    site_occupancy: np.ndarray
    species_per_site: np.ndarray
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


def site_species(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The species of every site in CSR form (see :class:`CrystalGraph`).

    Oxidation states are merged (``Fe2+`` 0.5 and ``Fe3+`` 0.3 on one site are Fe 0.8); a site's
    entries are sorted by decreasing occupancy, then Z.

    Returns:
        ``z [M]`` int64, ``occupancy [M]`` float64 and ``per_site [N]`` int64.
    """
    if structure.is_ordered:
        numbers = np.array(structure.atomic_numbers, dtype=np.int64)
        return numbers, np.ones(len(numbers)), np.ones(len(numbers), dtype=np.int64)
    z: list[int] = []
    occupancy: list[float] = []
    per_site: list[int] = []
    for site in structure:
        amounts: dict[int, float] = {}
        for specie, value in site.species.items():
            amounts[specie.Z] = amounts.get(specie.Z, 0.0) + float(value)
        entries = sorted(amounts.items(), key=lambda entry: (-entry[1], entry[0]))
        z += [number for number, _ in entries]
        occupancy += [value for _, value in entries]
        per_site.append(len(entries))
    return np.array(z, np.int64), np.array(occupancy), np.array(per_site, np.int64)


def structure_to_graph(structure: Structure, config: GraphConfig) -> CrystalGraph:
    """Build the CGCNN graph of a structure, ordered or disordered (sites keep their species and
    occupancies).

    Raises:
        ValueError: for an element beyond Z = 100 or a dummy species (no CGCNN atom features
            exist for it).
    """
    if any(isinstance(specie, DummySpecies) for specie in structure.composition):
        raise ValueError("a dummy species (X, a centroid...) has no CGCNN atom features")
    z, occupancy, per_site = site_species(structure)
    if z.max(initial=0) > CGCNN_MAX_Z:
        raise ValueError(f"element with Z={z.max()} has no CGCNN atom features (Z <= 100)")
    n_sites = len(per_site)
    centers, neighbors, _images, distances = structure.get_neighbor_list(
        config.radius, exclude_self=True
    )
    keep = nearest_neighbor_edges(centers, distances, config.max_neighbors)
    src, dst, dist = centers[keep], neighbors[keep], distances[keep]
    isolated = np.flatnonzero(np.bincount(src, minlength=n_sites) == 0)
    if isolated.size:
        src = np.concatenate([src, isolated])
        dst = np.concatenate([dst, isolated])
        dist = np.concatenate([dist, np.full(isolated.size, config.radius)])
        order = np.argsort(src, kind="stable")
        src, dst, dist = src[order], dst[order], dist[order]
    return CrystalGraph(
        site_species_z=z.astype(np.uint8),
        site_occupancy=occupancy.astype(np.float32),
        species_per_site=per_site.astype(np.uint8),
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
