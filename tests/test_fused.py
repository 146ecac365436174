"""The fused crystal tower (CGCNN readout + composition + symmetry) on real structures, and the
presets of the composition-only and fused towers."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from pymatgen.symmetry.groups import SpaceGroup

from clasp_pl.api import embed_structures, load_model, reads_composition
from clasp_pl.commands.fit import CLaSPCLI, expand_presets
from clasp_pl.data.composition import SPACE_GROUP
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.labels import CRYSTAL_SYSTEMS
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, OptimConfig
from clasp_pl.models.fused import (
    FusedConfig,
    FusedCrystalTower,
    crystal_system_indices,
    space_group_numbers,
)
from clasp_pl.resources import CONF_DIR
from clasp_pl.text.config import TextConfig
from helpers.data import TINY_GRAPH
from helpers.lightning import save_lightning_checkpoint

TEXT = TextConfig(model="tiny-random", freeze=True)
FUSED = FusedConfig(element_dim=8, symmetry_dim=4, out_dim=24, dropout=0.1)


@pytest.fixture(scope="module")
def batch(records_file, tmp_path_factory):
    """A training batch of 16 real structures with their composition descriptors."""
    dm = CrystalTextDataModule(
        records=str(records_file),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        text=TEXT,
        caption_fields=["title"],
        max_length=32,
        graph=TINY_GRAPH,
        split_fractions=(0.6, 0.2, 0.2),
        batch_size=16,
        composition_features=True,
    )
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def fused_module() -> CLaSPModule:
    torch.manual_seed(0)
    return CLaSPModule(
        text=TEXT,
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16, crystal_hidden=[16]),
        optim=OptimConfig(warmup_steps=2),
        crystal_encoder="fused",
        fused=FUSED,
    )


def test_fused_tower_shapes_and_gradients_reach_both_branches(batch):
    module = fused_module()
    tower = module.crystal_tower
    assert isinstance(tower, FusedCrystalTower)
    assert tower(batch).shape == (16, 24)
    crystal, text = module(batch)
    assert crystal.shape == text.shape == (16, 16)
    module.loss_fn(crystal, text, batch["group_ids"]).backward()
    graph_grad = tower.graph_tower.embed.weight.grad
    assert graph_grad is not None and graph_grad.abs().sum() > 0
    for layer in (tower.element_embedding, tower.space_group_embedding):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert tower.crystal_system_embedding.weight.grad.abs().sum() > 0


def test_fused_output_depends_on_the_composition_and_on_the_graph(batch):
    tower = fused_module().crystal_tower.eval()
    with torch.no_grad():
        reference = tower(batch)
        no_composition = tower(
            {**batch, "composition_features": torch.zeros_like(batch["composition_features"])}
        )
        stretched = tower({**batch, "edge_dist": batch["edge_dist"] * 0.8})
        assert not torch.allclose(reference, no_composition, atol=1e-4)
        assert not torch.allclose(reference, stretched, atol=1e-4)


def test_fused_tower_needs_composition_features(batch):
    without = {k: v for k, v in batch.items() if k != "composition_features"}
    with pytest.raises(KeyError, match="conf/model/fused.yaml"):
        fused_module().crystal_tower(without)


def test_space_group_and_crystal_system_lookup_match_pymatgen():
    numbers = torch.arange(1, 231)
    one_hot = torch.zeros(231, SPACE_GROUP.stop - SPACE_GROUP.start)
    one_hot[numbers - 1, numbers - 1] = 1.0  # the last row stays all zero: unknown
    found = space_group_numbers(one_hot)
    assert found[:230].tolist() == numbers.tolist() and found[230] == 0
    systems = crystal_system_indices(found)
    expected = [
        CRYSTAL_SYSTEMS.index(SpaceGroup.from_int_number(n).crystal_system) + 1
        for n in range(1, 231)
    ]
    assert systems[:230].tolist() == expected and systems[230] == 0


def test_fused_checkpoint_round_trips(batch, tmp_path):
    module = fused_module().eval()
    path = save_lightning_checkpoint(module, tmp_path / "fused.ckpt")
    restored = CLaSPModule.load_from_checkpoint(path).eval()
    assert restored.hparams["crystal_encoder"] == "fused"
    assert restored.hparams["fused"] == FUSED
    with torch.no_grad():
        torch.testing.assert_close(restored.encode_crystals(batch), module.encode_crystals(batch))


def preset_cli(tmp_path: Path, records_file: Path, *args: str) -> CLaSPCLI:
    """The CLI's model and data for ``args`` (presets expanded), without running."""
    data = ["--data.records", str(records_file), "--data.cache_dir", str(tmp_path / "cache")]
    with patch.object(sys, "argv", ["clasp"]):  # not pytest's arguments
        return CLaSPCLI(
            CLaSPModule, CrystalTextDataModule, args=[*expand_presets(list(args)), *data], run=False
        )


def test_fused_preset_builds_the_fused_tower_with_composition_data(tmp_path, records_file):
    cli = preset_cli(
        tmp_path, records_file, "--preset", "fused", "--config", str(CONF_DIR / "model/tiny.yaml")
    )
    assert isinstance(cli.model.crystal_tower, FusedCrystalTower)
    assert cli.datamodule.composition_features


def test_composition_preset_is_the_reference_recipe(tmp_path, records_file):
    """``--preset composition``: the tuned baseline (GELU heads 333->512->256 and 384->512->256,
    dropout 0.1, frozen mean-pooled MiniLM, AdamW 1e-3 / 1e-4, batch 256, 60 epochs, constant
    learning rate)."""
    cli = preset_cli(tmp_path, records_file, "--preset", "composition")
    model, data = cli.model, cli.datamodule
    assert model.hparams["crystal_encoder"] == "composition" and data.composition_features
    assert model.text_tower.pooling == "mean" and model.text_tower.frozen
    assert data.max_length == 64 and data.batch_size == 256
    assert cli.trainer.max_epochs == 60
    for head, width in ((model.crystal_head, 333), (model.text_head, 384)):
        linears = [layer for layer in head.mlp if isinstance(layer, torch.nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in linears] == [
            (width, 512),
            (512, 256),
        ]
        assert any(isinstance(layer, torch.nn.GELU) for layer in head.mlp)
        assert any(isinstance(layer, torch.nn.Dropout) and layer.p == 0.1 for layer in head.mlp)
    optim = model.optim
    assert (optim.lr, optim.weight_decay, optim.warmup_steps, optim.min_lr_ratio) == (
        1e-3,
        1e-4,
        0,
        1.0,
    )
    assert model.loss_fn.logit_scale_value == pytest.approx(1 / 0.07, rel=1e-4)


def test_embedding_new_structures_gives_the_training_path_s_embeddings(
    batch, records_file, tmp_path
):
    """``clasp embed``/``clasp search``/the map go through :func:`api.embed_structures`: for a
    tower that reads composition descriptors it computes them itself, and a structure gets the
    embedding the data module's cached descriptors give."""
    ckpt = save_lightning_checkpoint(fused_module(), tmp_path / "fused.ckpt")
    model = load_model(ckpt)
    assert reads_composition(model)
    lines = list(iter_record_lines(records_file))
    records = [CrystalRecord.from_json(lines[int(i)]) for i in batch["record_index"]]
    with torch.no_grad():
        expected = model.encode_crystals(batch)
    assert torch.allclose(embed_structures(model, records, batch_size=5), expected, atol=1e-5)
