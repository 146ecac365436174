"""Property fine-tuning: weights from a CLaSP checkpoint, linear probes, perov_5 regression."""

from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import pytest
import torch
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from clasp_pl.checkpoints import CheckpointError
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.labels import CRYSTAL_SYSTEMS
from clasp_pl.data.property_datamodule import PropertyDataModule
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, OptimConfig
from clasp_pl.models.finetune import PropertyModule
from clasp_pl.text.config import TextConfig
from helpers.data import TINY_GRAPH
from helpers.lightning import quiet_trainer, save_lightning_checkpoint

TINY_CRYSTAL = CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32)
FROZEN_TINY_TEXT = TextConfig(model="tiny-random", freeze=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: ~3x faster


def validation_metrics(model: L.LightningModule, dm: L.LightningDataModule) -> dict[str, float]:
    """Metrics of one pass over the validation split (``val/mae`` or ``val/acc``, ...)."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    return trainer.validate(model, dm, verbose=False)[0]


def tiny_clasp() -> CLaSPModule:
    return CLaSPModule(
        text=FROZEN_TINY_TEXT,
        crystal=TINY_CRYSTAL,
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16, crystal_hidden=[24]),
        optim=OptimConfig(lr=3e-3, warmup_steps=5),
    )


# ----------------------------------------------------------------- loading a CLaSP checkpoint
def test_loaded_weights_equal_the_checkpoint_and_shapes_come_from_it(tmp_path):
    L.seed_everything(0)
    clasp = tiny_clasp()
    path = save_lightning_checkpoint(clasp, tmp_path / "clasp.ckpt")
    model = PropertyModule(init_from=str(path), use_pretrained_head=True)  # no sizes given
    assert model.hparams.crystal == TINY_CRYSTAL and model.hparams.graph == TINY_GRAPH
    for name in ("crystal_tower", "crystal_head"):
        mine, theirs = getattr(model, name).state_dict(), getattr(clasp, name).state_dict()
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert torch.equal(mine[key], value), f"{name}.{key}"
    # a fine-tuned checkpoint restores without the CLaSP file (resolved sizes are saved)
    path.unlink()
    saved = save_lightning_checkpoint(model, tmp_path / "property.ckpt")
    restored = PropertyModule.load_from_checkpoint(saved)
    for (key, a), b in zip(model.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_settings_that_contradict_the_checkpoint_are_refused(tmp_path):
    path = save_lightning_checkpoint(tiny_clasp(), tmp_path / "clasp.ckpt")
    with pytest.raises(ValueError, match=r"atom_fea_len=64 \(checkpoint: 16\)"):
        PropertyModule(init_from=str(path), crystal=CGCNNConfig())
    with pytest.raises(ValueError, match=r"radius=8.0 \(checkpoint: 5.0\)"):
        PropertyModule(init_from=str(path), graph=GraphConfig())
    with pytest.raises(CheckpointError, match="no such file"):
        PropertyModule(init_from=str(tmp_path / "missing.ckpt"))


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval_mode(records_file, tmp_path):
    dm = PropertyDataModule(
        records=str(records_file),
        target="crystal_system",
        cache_dir=str(tmp_path / "cache"),
        graph=TINY_GRAPH,
        split_fractions=(0.6, 0.2, 0.2),
        batch_size=16,
    )
    dm.prepare_data()
    dm.setup("fit")
    model = PropertyModule(
        task="classification",
        num_classes=len(CRYSTAL_SYSTEMS),
        crystal=TINY_CRYSTAL,
        graph=TINY_GRAPH,
        freeze_encoder=True,
    )
    assert not model.crystal_tower.training  # Lightning never calls .train(): eval from the start
    model.train()
    assert not model.crystal_tower.training and model.head.training
    batch = next(iter(dm.train_dataloader()))
    assert batch["targets"].dtype == torch.int64 and "input_ids" not in batch
    torch.nn.functional.cross_entropy(model(batch), batch["targets"]).backward()
    assert all(p.grad is None for p in model.crystal_tower.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


# ----------------------------------------------------------------- targets
def test_crystal_system_labels_are_cached_and_match_pymatgen(records_file, real_records, tmp_path):
    dm = PropertyDataModule(
        records=str(records_file), cache_dir=str(tmp_path / "cache"), graph=TINY_GRAPH
    )
    dm.prepare_data()
    dm.setup("fit")
    store = dm.cache_root / "targets" / "crystal_system" / "manifest.json"
    assert '"symprec": 0.1' in store.read_text()
    for record, label in itertools.islice(zip(real_records, dm.targets, strict=True), 20):
        system = SpacegroupAnalyzer(record.to_structure(), symprec=0.1).get_crystal_system()
        assert CRYSTAL_SYSTEMS[int(label)] == system


def test_missing_meta_target_gives_a_clear_error(records_file, tmp_path):
    dm = PropertyDataModule(
        records=str(records_file),
        target="band_gap",
        cache_dir=str(tmp_path / "cache"),
        graph=TINY_GRAPH,
    )
    with pytest.raises(ValueError, match="band_gap.*meta keys of the first record"):
        dm.setup("fit")


# ----------------------------------------------------------------- perov_5 regression
def test_regression_fine_tuning_beats_the_mean_on_perov5(perov_records, tmp_path):
    L.seed_everything(0)
    dm = PropertyDataModule(
        records=str(perov_records),
        target="heat_ref",
        cache_dir=str(tmp_path / "cache"),
        graph=TINY_GRAPH,
        split_fractions=(0.7, 0.3, 0.0),
        batch_size=32,
    )
    model = PropertyModule(crystal=TINY_CRYSTAL, graph=TINY_GRAPH, head_hidden=[32], lr=3e-3)
    trainer = quiet_trainer(max_epochs=10)
    trainer.fit(model, dm)
    mean, std = dm.target_stats()
    assert model.target_mean.item() == pytest.approx(mean) and std > 0.1  # eV/atom
    mean_mae = np.abs(dm.split_targets("val") - mean).mean()  # predict-the-train-mean baseline
    mae = validation_metrics(model, dm)["val/mae"]
    print(f"perov_5 heat_ref val MAE {mae:.3f} eV/atom, predict-the-mean {mean_mae:.3f}")
    assert mae < 0.8 * mean_mae
