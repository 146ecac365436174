"""The ``chgnet`` crystal tower on real structures: the data module's cached CHGNet features
(records CHGNet cannot read left out, usable rows found without reading the feature matrices),
the tower's standardisation and shapes, ``clasp fit --preset chgnet``, embedding new structures
with it, and what refuses it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clasp_pl.api import chgnet_features, embed_structures, load_model, reads_composition
from clasp_pl.cli import main as clasp
from clasp_pl.commands.fit import CLaSPCLI, expand_presets
from clasp_pl.data.cache import ArrayStore
from clasp_pl.data.chgnet_features import CHGNET_DIM, ChgnetMissing
from clasp_pl.data.composition import COMPOSITION_DIM
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.records import CrystalRecord, iter_record_lines, iter_records, write_records
from clasp_pl.models.chgnet_tower import ChgnetCrystalTower, ChgnetTowerConfig
from clasp_pl.models.clasp import CLaSPModule, CrystalFeatures, HeadsConfig
from clasp_pl.models.finetune import PropertyModule
from clasp_pl.text.config import TextConfig
from helpers.data import DEFAULT_RECORDS, REPO, TINY_GRAPH
from helpers.lightning import save_lightning_checkpoint

TEXT = TextConfig(model="tiny-random", freeze=True)
LONE_ATOM = "lone-au"


@pytest.fixture(scope="module")
def chgnet_records(tmp_path_factory) -> Path:
    """Sixteen small real structures, one per paper (two of them disordered), and a lone gold
    atom in a 12 Å cell: CGCNN gives it a self-loop, CHGNet (6 Å cutoff) no graph at all."""
    picked: dict[str, CrystalRecord] = {}
    disordered = 0
    for record in iter_records(DEFAULT_RECORDS):
        if record.num_sites > 12 or record.group in picked:
            continue
        if not record.is_ordered:
            if disordered == 2:
                continue
            disordered += 1
        picked[record.group] = record
        if len(picked) == 16 and disordered == 2:
            break
    lone = CrystalRecord(
        id=LONE_ATOM,
        lattice=[[12.0, 0, 0], [0, 12.0, 0], [0, 0, 12.0]],
        species=["Au"],
        frac_coords=[[0.0, 0.0, 0.0]],
        title="an isolated gold atom",
        source="test",
    )
    records = [*picked.values(), lone]
    assert len(records) == 17 and disordered == 2
    path = tmp_path_factory.mktemp("chgnet-records") / "small.jsonl.gz"
    write_records(records, path)
    return path


def chgnet_data(records: Path, cache: Path, **options) -> CrystalTextDataModule:
    return CrystalTextDataModule(
        records=str(records),
        cache_dir=str(cache),
        text=TEXT,
        caption_fields=["title"],
        max_length=32,
        graph=TINY_GRAPH,
        split_fractions=(0.6, 0.2, 0.2),
        batch_size=4,
        composition_features=True,
        chgnet_features=True,
        crystal_graphs=False,
        **options,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(chgnet_records, cache) -> CrystalTextDataModule:
    dm = chgnet_data(chgnet_records, cache)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(data) -> dict:
    return next(iter(data.train_dataloader()))


def record_ids(records: Path) -> list[str]:
    return [json.loads(line)["id"] for line in iter_record_lines(records)]


def served_ids(dm: CrystalTextDataModule, records: Path) -> set[str]:
    ids = record_ids(records)
    return {
        ids[int(dataset[i]["record_index"][0])]
        for dataset in dm.datasets.values()
        for i in range(len(dataset))
    }


# ------------------------------------------------------------------------------ data module
def test_data_module_serves_chgnet_features_and_leaves_out_what_chgnet_cannot_read(
    chgnet_records, data, batch, caplog
):
    assert served_ids(data, chgnet_records) == set(record_ids(chgnet_records)) - {LONE_ATOM}
    features = batch["chgnet_features"]
    assert features.shape == (4, CHGNET_DIM) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert batch["composition_features"].shape == (4, COMPOSITION_DIM)
    store = ArrayStore(data.cache_root / "chgnet")
    for row, record_index in zip(features, batch["record_index"], strict=True):
        np.testing.assert_array_equal(row.numpy(), store[int(record_index)]["features"][0])

    caplog.set_level(logging.INFO)
    again = chgnet_data(chgnet_records, data.cache_root.parent)
    again.setup("fit")
    assert "1 structures have no CHGNet features; left out of pairs" in caplog.text


def test_setup_finds_usable_rows_without_reading_the_feature_matrices(
    chgnet_records, data, monkeypatch
):
    """At 400k records the composition matrix alone is 533 MB: every rank reads only the stores'
    per-row validity flags, and rows that failed are still left out."""
    read = []
    field = ArrayStore.field

    def recording_field(self, name):
        read.append((self.root.name, name))
        return field(self, name)

    monkeypatch.setattr(ArrayStore, "field", recording_field)
    dm = chgnet_data(chgnet_records, data.cache_root.parent)
    dm.setup("fit")
    assert ("composition", "valid") in read and ("chgnet", "valid") in read
    assert not [name for store, name in read if name == "features"]
    assert LONE_ATOM not in served_ids(dm, chgnet_records)


# ------------------------------------------------------------------------------ tower
def chgnet_module(with_composition: bool = True) -> CLaSPModule:
    torch.manual_seed(0)
    return CLaSPModule(
        text=TEXT,
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16, crystal_hidden=[32]),
        crystal_encoder="chgnet",
        chgnet=ChgnetTowerConfig(with_composition=with_composition),
    )


@pytest.mark.parametrize("with_composition", [True, False])
def test_tower_shapes_and_what_it_reads(batch, with_composition):
    module = chgnet_module(with_composition)
    tower = module.crystal_tower
    width = CHGNET_DIM + (COMPOSITION_DIM if with_composition else 0)
    assert isinstance(tower, ChgnetCrystalTower) and tower.out_dim == width
    assert module.crystal_features == CrystalFeatures(composition=with_composition, chgnet=True)
    assert list(tower.parameters()) == []  # frozen features: the head does the learning
    assert tower(batch).shape == (4, width)
    crystal, text = module(batch)
    assert crystal.shape == text.shape == (4, 16)
    module.loss_fn(crystal, text, batch["group_ids"]).backward()
    assert module.crystal_head.mlp[0].weight.grad.abs().sum() > 0


def test_tower_standardises_each_dimension_by_the_training_statistics(batch):
    tower = ChgnetCrystalTower(ChgnetTowerConfig(with_composition=False))
    features = batch["chgnet_features"].double()
    shifted = {**batch, "chgnet_features": batch["chgnet_features"] * 3 + 5}
    tower.train()
    tower(batch)
    tower(shifted)
    both = torch.cat([features, features * 3 + 5])
    mean = (features.mean(0) + (features * 3 + 5).mean(0)) / 2  # cumulative: equal weights
    torch.testing.assert_close(tower.standardise.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    tower.eval()
    with torch.no_grad():
        out = tower({**batch, "chgnet_features": both.float()}).double()
    expected = (both - mean) / torch.sqrt(tower.standardise.running_var.double() + 1e-5)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_tower_without_served_features_names_the_setting(batch):
    without = {k: v for k, v in batch.items() if k != "chgnet_features"}
    with pytest.raises(KeyError, match="data.chgnet_features=true"):
        chgnet_module().crystal_tower(without)


def preset_cli(tmp_path: Path, records: Path, *args: str) -> CLaSPCLI:
    data = ["--data.records", str(records), "--data.cache_dir", str(tmp_path / "cache")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["clasp"])  # not pytest's arguments
        return CLaSPCLI(
            CLaSPModule, CrystalTextDataModule, args=[*expand_presets(list(args)), *data], run=False
        )


@pytest.mark.parametrize("with_composition", ["true", "false"])
def test_chgnet_preset_is_the_composition_recipe_with_chgnet_features(
    tmp_path, chgnet_records, with_composition
):
    cli = preset_cli(
        tmp_path,
        chgnet_records,
        "--preset",
        "chgnet",
        "--model.chgnet.with_composition",
        with_composition,
    )
    model, data = cli.model, cli.datamodule
    width = CHGNET_DIM + (COMPOSITION_DIM if with_composition == "true" else 0)
    assert isinstance(model.crystal_tower, ChgnetCrystalTower)
    assert data.chgnet_features and data.composition_features and not data.crystal_graphs
    linears = [layer for layer in model.crystal_head.mlp if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(width, 512), (512, 256)]
    assert data.batch_size == 256 and cli.trainer.max_epochs == 60
    assert model.text_tower.frozen and model.optim.lr == 1e-3


def test_clasp_fit_preset_chgnet_trains_with_finite_losses(chgnet_records, cache, tmp_path):
    """A tiny-model run of the preset on the small records (their CHGNet store is reused)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        status = clasp(
            [
                "fit",
                *("--preset", "chgnet"),
                *("--config", str(REPO / "conf/trainer/debug.yaml")),
                *("--config", str(REPO / "conf/model/tiny.yaml")),
                *("--model.heads.crystal_hidden", "[16]"),
                *("--data.records", str(chgnet_records)),
                *("--data.cache_dir", str(cache)),
                *("--data.split_fractions", "[0.6, 0.2, 0.2]"),
                *("--data.batch_size", "4"),
                *("--data.prepare_workers", "1"),
                *("--trainer.max_epochs", "2"),
                *("--trainer.enable_progress_bar", "false"),
            ]
        )
    assert status == 0
    steps = [
        json.loads(line)
        for path in sorted((tmp_path / "runs/debug/records").rglob("*.jsonl"))
        for line in path.open()
    ]
    assert len(steps) >= 2 and all(np.isfinite(step["loss"]) for step in steps)
    ckpt = tmp_path / "runs/debug/checkpoints/last.ckpt"
    assert load_model(ckpt).hparams["crystal_encoder"] == "chgnet"


# ------------------------------------------------------------------------------ embedding
@pytest.fixture(scope="module")
def chgnet_ckpt(batch, tmp_path_factory) -> Path:
    """A chgnet-tower model whose standardisation has seen two training batches."""
    module = chgnet_module()
    module.train()
    with torch.no_grad():
        module(batch)
        module({**batch, "chgnet_features": batch["chgnet_features"] * 2})
    path = tmp_path_factory.mktemp("ckpt") / "chgnet.ckpt"
    return save_lightning_checkpoint(module.eval(), path)


def test_embedding_new_structures_computes_their_chgnet_features(
    chgnet_ckpt, chgnet_records, batch
):
    """``clasp embed``/``search``/``map`` go through :func:`api.embed_structures`: it computes
    CHGNet features (of the ordered approximation, for disordered structures) on the fly, and a
    structure gets the embedding the data module's cached features give."""
    model = load_model(chgnet_ckpt)
    assert reads_composition(model) and chgnet_features(model) is not None
    lines = list(iter_record_lines(chgnet_records))
    records = [CrystalRecord.from_json(lines[int(i)]) for i in batch["record_index"]]
    with torch.no_grad():
        expected = model.encode_crystals(batch)
    structures = [record.to_structure() for record in records]
    torch.testing.assert_close(
        embed_structures(model, structures, batch_size=3), expected, atol=1e-5, rtol=1e-5
    )


def test_disordered_structures_embed_like_their_cached_rows(chgnet_ckpt, data, chgnet_records):
    model = load_model(chgnet_ckpt)
    lines = list(iter_record_lines(chgnet_records))
    disordered = [
        (index, record)
        for index, record in enumerate(CrystalRecord.from_json(line) for line in lines)
        if not record.is_ordered
    ]
    assert len(disordered) == 2
    chgnet, composition = (ArrayStore(data.cache_root / name) for name in ("chgnet", "composition"))
    cached = {
        "chgnet_features": torch.from_numpy(
            np.concatenate([chgnet[i]["features"] for i, _ in disordered])
        ),
        "composition_features": torch.from_numpy(
            np.concatenate([composition[i]["features"] for i, _ in disordered])
        ),
    }
    with torch.no_grad():
        expected = model.encode_crystals(cached)
    embedded = embed_structures(model, [record for _, record in disordered])
    torch.testing.assert_close(embedded, expected, atol=1e-5, rtol=1e-5)


def test_embedding_without_chgnet_installed_names_the_extra(
    chgnet_ckpt, chgnet_records, monkeypatch
):
    model = load_model(chgnet_ckpt)
    monkeypatch.setitem(sys.modules, "chgnet.model", None)  # import fails as when not installed
    with pytest.raises(ChgnetMissing, match=r"pip install clasp_pl\[chgnet\]"):
        embed_structures(model, list(iter_records(chgnet_records))[:1])


def test_fine_tuning_refuses_a_chgnet_checkpoint(chgnet_ckpt):
    with pytest.raises(ValueError, match="'chgnet' crystal tower; fine-tuning starts from a CGCNN"):
        PropertyModule(init_from=str(chgnet_ckpt))
