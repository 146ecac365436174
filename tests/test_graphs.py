"""Crystal graphs against a brute-force periodic neighbour search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import DummySpecies, Lattice, Structure

from clasp_pl.data.cif import read_cif
from clasp_pl.data.graphs import (
    GraphConfig,
    cgcnn_atom_features,
    nearest_neighbor_edges,
    structure_to_graph,
)
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.rejects import Reject
from helpers.data import SHARED_DATA, first_records, shared_path


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
    mixed = Structure(Lattice.cubic(5.0), [{"U": 0.5, "Lr": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="Z=103 has no CGCNN atom features"):
        structure_to_graph(mixed, GraphConfig())


def test_atom_feature_table():
    table = cgcnn_atom_features()
    assert table.shape == (101, 92)
    assert not table[0].any() and table[1:].any(axis=1).all()


EDGE_CASES = SHARED_DATA / "cif_edge_cases"


def cs_sn_in_cl3() -> Structure:
    """COD 4003024, Cs(Sn0.9In0.07)Cl3: one mixed Sn/In site with a 3 % vacancy (real CIF)."""
    parsed = read_cif(shared_path(EDGE_CASES / "gemmi__4003024.cif"))
    assert not isinstance(parsed, Reject), parsed
    return parsed.structure


def test_ordered_sites_are_one_entry_at_full_occupancy():
    structure = special_structures()[1]
    graph = structure_to_graph(structure, GraphConfig())
    assert graph.species_per_site.tolist() == [1] * len(structure)
    assert graph.site_species_z.tolist() == list(structure.atomic_numbers)
    assert graph.site_occupancy.tolist() == [1.0] * len(structure)
    assert (graph.site_species_z.dtype, graph.site_occupancy.dtype) == (np.uint8, np.float32)


def test_a_mixed_site_keeps_its_species_and_occupancies():
    structure = cs_sn_in_cl3()
    graph = structure_to_graph(structure, GraphConfig(radius=5.0, max_neighbors=8))
    assert graph.species_per_site.tolist() == [1, 2, 1, 1, 1]
    assert graph.site_species_z.tolist() == [55, 50, 49, 17, 17, 17]  # Cs, Sn, In, Cl x3
    np.testing.assert_allclose(graph.site_occupancy, [1, 0.9, 0.0672, 1, 1, 1], rtol=1e-6)
    # neighbours come from the coordinates alone: the same edges as the ordered stand-in
    ordered = structure.copy()
    ordered.replace(1, "Sn")
    reference = structure_to_graph(ordered, GraphConfig(radius=5.0, max_neighbors=8))
    for name in ("edge_src", "edge_dst", "edge_dist"):
        np.testing.assert_array_equal(getattr(graph, name), getattr(reference, name))


def test_oxidation_states_of_one_element_merge_into_one_entry():
    structure = Structure(
        Lattice.cubic(4.2), [{"Fe2+": 0.5, "Fe3+": 0.3, "Mg2+": 0.2}, "O2-"], [[0, 0, 0], [0.5] * 3]
    )
    graph = structure_to_graph(structure, GraphConfig())
    assert graph.species_per_site.tolist() == [2, 1]
    assert graph.site_species_z.tolist() == [26, 12, 8]
    np.testing.assert_allclose(graph.site_occupancy, [0.8, 0.2, 1.0], rtol=1e-6)


def test_isolated_mixed_site_gets_a_self_loop():
    structure = Structure(Lattice.cubic(20.0), [{"Ar": 0.6, "Kr": 0.4}], [[0, 0, 0]])
    graph = structure_to_graph(structure, GraphConfig(radius=8.0))
    assert graph.edge_src.tolist() == [0] == graph.edge_dst.tolist()
    assert graph.site_species_z.tolist() == [18, 36]


def test_a_dummy_species_has_no_atom_features():
    structure = Structure(Lattice.cubic(5.0), [DummySpecies("X"), "Na"], [[0, 0, 0], [0.5] * 3])
    with pytest.raises(ValueError, match="dummy species"):
        structure_to_graph(structure, GraphConfig())


def test_majority_and_skip_policies_still_give_ordered_graphs():
    path = shared_path(EDGE_CASES / "gemmi__4003024.cif")
    majority = read_cif(path, occupancy="majority", check_stated_formula=False)
    assert not isinstance(majority, Reject), majority
    sites = majority.sites
    record = CrystalRecord.from_sites(
        "m", sites.lattice, sites.frac, sites.species, sites.occupancies
    )
    assert record.is_ordered and not record.occupancies
    graph = structure_to_graph(record.to_structure(), GraphConfig(radius=5.0, max_neighbors=8))
    assert graph.species_per_site.tolist() == [1] * 5
    assert graph.site_species_z.tolist() == [55, 50, 17, 17, 17]  # In is lost: CsSnCl3
    assert graph.site_occupancy.tolist() == [1.0] * 5
    refused = read_cif(path, occupancy="majority")  # the formula check notices the lost In
    assert isinstance(refused, Reject) and refused.reason == "formula_mismatch"
    skipped = read_cif(path, occupancy="skip")
    assert isinstance(skipped, Reject) and skipped.reason == "partial_occupancy"
