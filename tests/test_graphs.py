"""Crystal graphs against a brute-force periodic neighbour search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from clasp_pl.data.graphs import (
    GraphConfig,
    cgcnn_atom_features,
    nearest_neighbor_edges,
    structure_to_graph,
)
from helpers.data import first_records


def brute_force_neighbours(structure: Structure, radius: float, k: int, tol: float = 1e-4):
    """Per atom: the sorted distances of its k nearest periodic neighbours (ties kept),
    by enumerating every lattice image that can reach within ``radius``."""
    lattice = structure.lattice
    reach = [
        int(np.ceil(radius * np.linalg.norm(row))) + 1
        for row in lattice.reciprocal_lattice_crystallographic.matrix
    ]
    images = np.array(list(itertools.product(*(range(-n, n + 1) for n in reach))))
    cart = structure.cart_coords
    shifts = images @ lattice.matrix
    result = []
    for i in range(len(structure)):
        candidates = []
        for j in range(len(structure)):
            d = np.linalg.norm(cart[j] + shifts - cart[i], axis=1)
            for dist in d:
                if 1e-8 < dist <= radius:
                    candidates.append((dist, j))
        candidates.sort()
        if not candidates:
            result.append([(radius, i)])
            continue
        kth = candidates[min(k, len(candidates)) - 1][0]
        result.append([c for c in candidates if c[0] <= kth + tol])
    return result


def graph_neighbours(structure: Structure, config: GraphConfig):
    graph = structure_to_graph(structure, config)
    per_atom = [[] for _ in range(len(structure))]
    for s, d, dist in zip(graph.edge_src, graph.edge_dst, graph.edge_dist, strict=True):
        per_atom[s].append((float(dist), int(d)))
    return [sorted(p) for p in per_atom]


def special_structures() -> list[Structure]:
    one_atom = Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])
    triclinic = Structure(
        Lattice.from_parameters(4.1, 5.3, 6.7, 71.0, 83.0, 101.0),
        ["Ca", "Al", "Si", "O", "O"],
        [[0.1, 0.2, 0.3], [0.5, 0.1, 0.8], [0.7, 0.6, 0.2], [0.3, 0.9, 0.55], [0.85, 0.4, 0.05]],
    )
    isolated = Structure(Lattice.cubic(20.0), ["Ar"], [[0, 0, 0]])
    return [one_atom, triclinic, isolated]


@pytest.mark.parametrize("radius,k", [(8.0, 12), (4.0, 6)])
def test_matches_brute_force_on_real_and_special_structures(radius, k):
    structures = [r.to_structure() for r in first_records(20, max_sites=24)] + special_structures()
    assert len(structures) >= 23
    config = GraphConfig(radius=radius, max_neighbors=k)
    for structure in structures:
        expected = brute_force_neighbours(structure, radius, k)
        got = graph_neighbours(structure, config)
        assert len(got) == len(expected)
        for atom, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert len(g) == len(e), (structure.composition, atom)
            np.testing.assert_allclose([x[0] for x in g], [x[0] for x in e], atol=1e-4)
            assert sorted(x[1] for x in g) == sorted(x[1] for x in e)


def test_isolated_atom_gets_a_self_loop_at_the_cutoff():
    structure = Structure(Lattice.cubic(20.0), ["Ar"], [[0, 0, 0]])
    graph = structure_to_graph(structure, GraphConfig(radius=8.0))
    assert graph.edge_src.tolist() == [0] and graph.edge_dst.tolist() == [0]
    assert graph.edge_dist.tolist() == [8.0]


def test_tied_shell_is_kept_whole():
    rock_salt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    graph = structure_to_graph(rock_salt, GraphConfig(radius=8.0, max_neighbors=12))
    per_atom = np.bincount(graph.edge_src)
    assert (per_atom == 18).all()  # 6 nearest + the whole 12-atom second shell


def test_nearest_neighbor_edges_keeps_k_per_centre():
    centers = np.array([0, 0, 0, 1, 1, 1, 1])
    dist = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 4.5, 6.0])
    kept = nearest_neighbor_edges(centers, dist, 2)
    assert sorted(kept.tolist()) == [1, 2, 4, 5]


def test_element_beyond_table_is_rejected():
    structure = Structure(Lattice.cubic(5.0), ["Es"], [[0, 0, 0]])  # Z = 99 is fine
    structure_to_graph(structure, GraphConfig())
    with pytest.raises(ValueError, match="Z <= 100"):
        structure_to_graph(Structure(Lattice.cubic(5.0), ["Lr"], [[0, 0, 0]]), GraphConfig())


def test_atom_feature_table():
    table = cgcnn_atom_features()
    assert table.shape == (101, 92)
    assert not table[0].any() and table[1:].any(axis=1).all()
