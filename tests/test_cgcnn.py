"""CGCNN tower: invariances, aggregation paths, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clasp_pl.data.batch import collate_graphs
from clasp_pl.data.graphs import structure_to_graph
from clasp_pl.models import scatter
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig, GatedConvolution
from helpers.data import TINY_GRAPH, first_records


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
