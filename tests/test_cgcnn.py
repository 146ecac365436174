"""CGCNN tower: invariances, aggregation paths, shapes, occupancy-weighted site features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from clasp_pl.data.batch import collate_graphs
from clasp_pl.data.cif import read_cif
from clasp_pl.data.graphs import cgcnn_atom_features, structure_to_graph
from clasp_pl.data.rejects import Reject
from clasp_pl.models import scatter
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig, GatedConvolution
from helpers.data import SHARED_DATA, TINY_GRAPH, first_records, shared_path


def encode(model, structures):
    return model(collate_graphs([vars(structure_to_graph(s, TINY_GRAPH)) for s in structures]))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = CGCNN(CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=24), TINY_GRAPH).double()
    batch_structures = [r.to_structure() for r in first_records(8, max_sites=24)]
    net.train()
    with torch.no_grad():  # give batch norm non-trivial running statistics
        for _ in range(3):
            encode(net.float(), batch_structures)
    return net.float().eval()


def test_output_shape_and_batch_independence(model):
    structures = [r.to_structure() for r in first_records(5, max_sites=24)]
    together = encode(model, structures)
    assert together.shape == (5, 24)
    alone = torch.cat([encode(model, [s]) for s in structures])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_invariant_to_atom_order(model):
    structure = first_records(3, max_sites=24)[2].to_structure()
    permutation = np.random.default_rng(0).permutation(len(structure))
    shuffled = structure.copy()
    shuffled = type(structure).from_sites([structure[i] for i in permutation])
    torch.testing.assert_close(
        encode(model, [structure]), encode(model, [shuffled]), atol=1e-5, rtol=1e-5
    )


def test_invariant_to_supercell(model):
    for record in first_records(4, max_sites=12):
        structure = record.to_structure()
        supercell = structure.make_supercell([2, 1, 1], in_place=False)
        torch.testing.assert_close(
            encode(model, [structure]), encode(model, [supercell]), atol=1e-4, rtol=1e-4
        )


def test_native_segment_sum_matches_a_dense_reference():
    values = torch.randn(50, 7)
    index = torch.randint(0, 6, (50,))
    dense = torch.zeros(6, 7)
    for row, segment in zip(values, index, strict=True):
        dense[segment] += row
    torch.testing.assert_close(scatter.segment_sum(values, index, 6, False), dense)
    means = scatter.segment_mean(values, index, 6, False)
    counts = torch.bincount(index, minlength=6).clamp_min(1).unsqueeze(-1)
    torch.testing.assert_close(means, dense / counts)


@pytest.mark.skipif(scatter.torch_scatter is None, reason="torch-scatter (optional extra) absent")
def test_torch_scatter_path_agrees_with_native():
    values = torch.randn(200, 9)
    index = torch.randint(0, 17, (200,))
    torch.testing.assert_close(
        scatter.segment_sum(values, index, 17, True), scatter.segment_sum(values, index, 17, False)
    )


def test_asking_for_torch_scatter_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(scatter, "torch_scatter", None)
    with pytest.raises(ImportError, match="clasp_pl\\[scatter\\]"):
        scatter.segment_sum(torch.ones(2, 1), torch.zeros(2, dtype=torch.long), 1, True)


def test_factorised_convolution_equals_the_concatenation_form():
    """[v_i, v_j, g] W computed blockwise must equal the reference's concatenated Linear."""
    torch.manual_seed(0)
    conv = GatedConvolution(8, 11, use_torch_scatter=False).double().eval()
    atoms = torch.randn(10, 8, dtype=torch.float64)
    src, dst = torch.randint(0, 10, (40,)), torch.randint(0, 10, (40,))
    edges = torch.randn(40, 11, dtype=torch.float64)
    z = conv.edge_norm(conv.gate_and_core(torch.cat([atoms[src], atoms[dst], edges], dim=-1)))
    gate, core = z.chunk(2, dim=-1)
    messages = torch.sigmoid(gate) * torch.nn.functional.softplus(core)
    summed = torch.zeros(10, 8, dtype=torch.float64).index_add_(0, src, messages)
    reference = torch.nn.functional.softplus(atoms + conv.atom_norm(summed))
    torch.testing.assert_close(conv(atoms, src, dst, edges), reference)


class AtomicNumberLookup(CGCNN):
    """The tower as it was before disorder was kept: one Z per site, its table row as input."""

    def site_features(self, batch):
        assert torch.equal(batch["species_site"], torch.arange(len(batch["crystal_index"])))
        return self.atom_table[batch["site_species_z"]]


def test_ordered_crystals_give_the_numbers_of_the_atomic_number_lookup(model):
    structures = [r.to_ordered_structure() for r in first_records(6, max_sites=24)]
    batch = collate_graphs([vars(structure_to_graph(s, TINY_GRAPH)) for s in structures])
    numbers = torch.tensor([z for s in structures for z in s.atomic_numbers])
    torch.testing.assert_close(
        model.site_features(batch), model.atom_table[numbers], atol=1e-6, rtol=0
    )
    old = AtomicNumberLookup(model.config, TINY_GRAPH)
    old.load_state_dict(model.state_dict())
    old.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), old(batch), atol=1e-6, rtol=0)


def test_a_mixed_site_feature_is_the_occupancy_weighted_sum_of_its_elements(model):
    parsed = read_cif(shared_path(SHARED_DATA / "cif_edge_cases" / "gemmi__4003024.cif"))
    assert not isinstance(parsed, Reject), parsed
    structure = parsed.structure  # Cs (Sn0.9 In0.0672) Cl3
    batch = collate_graphs([vars(structure_to_graph(structure, TINY_GRAPH))])
    features = model.site_features(batch)
    table = cgcnn_atom_features()
    by_hand = 0.9 * table[50] + 0.0672 * table[49]  # Sn, In; the 3 % vacancy adds nothing
    np.testing.assert_allclose(features[1].numpy(), by_hand, atol=1e-6)
    np.testing.assert_allclose(features[0].numpy(), table[55], atol=0)  # ordered Cs
    assert model(batch).shape == (1, 24)


def test_a_partly_vacant_site_is_its_element_scaled_by_its_occupancy(model):
    half = Structure(Lattice.cubic(4.0), [{"Na": 0.5}, "Cl"], [[0, 0, 0], [0.5] * 3])
    features = model.site_features(collate_graphs([vars(structure_to_graph(half, TINY_GRAPH))]))
    table = cgcnn_atom_features()
    np.testing.assert_allclose(features.numpy(), [0.5 * table[11], table[17]], atol=1e-7)
