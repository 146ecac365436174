"""Linear probes: structure labels, the probe protocol, and the claim that CLaSP pretraining
makes a crystal encoder's features better for a linear probe than random initialisation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from clasp_pl.cli import main as clasp_main
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.labels import MINERAL_CLASSES, mineral_class_of
from clasp_pl.data.property_datamodule import PropertyDataModule
from clasp_pl.data.records import write_records
from clasp_pl.evaluation.probe import (
    ProbeOptions,
    constant_scores,
    encode_features,
    probe_scores,
    random_encoder,
    recalibrate_batch_norm,
    run_probe,
)
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, OptimConfig
from clasp_pl.models.finetune import PropertyModule
from clasp_pl.text.config import TextConfig
from helpers.data import TINY_GRAPH, first_records
from helpers.lightning import quiet_trainer, save_lightning_checkpoint


# ----------------------------------------------------------------- mineral classes
@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("Mg2SiO4", "silicates"),  # forsterite
        ("Ca5P3O12F", "phosphates"),  # fluorapatite: the oxyanion outranks the halogen
        ("FeAsO4H4O2", "phosphates"),  # scorodite (arsenate)
        ("CaSO4H4O2", "sulfates"),  # gypsum
        ("Na2B4O17H20", "borates"),  # borax
        ("CaCO3", "carbonates"),  # calcite
        ("KNO3", "carbonates"),  # niter (nitrates go with carbonates)
        ("FeCr2O4", "oxides"),  # chromite: Cr is a cation here
        ("Al2O3", "oxides"),  # corundum
        ("NaCl", "halides"),  # halite
        ("FeS2", "sulfides"),  # pyrite
        ("NiAs", "sulfides"),  # nickeline (arsenide)
        ("Cu3AsS4", "sulfides"),  # enargite (sulfosalt)
        ("Au", "elements"),
        ("Sb", "elements"),  # native antimony, not an antimonide
        ("SiC", "elements"),  # moissanite (carbides are class 1)
    ],
)
def test_mineral_class_rules(formula, expected):
    assert mineral_class_of(formula) == expected
    assert expected in MINERAL_CLASSES


def mineral_class_data(records: Path, cache_dir: Path) -> PropertyDataModule:
    """The mineral-class property data of ``records`` on tiny graphs, set up."""
    dm = PropertyDataModule(
        records=str(records), target="mineral_class", cache_dir=str(cache_dir), graph=TINY_GRAPH
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_mineral_class_labels_of_the_default_data(records_file, real_records, tmp_path):
    dm = mineral_class_data(records_file, tmp_path / "cache")
    assert dm.task == "classification"
    expected = [MINERAL_CLASSES.index(mineral_class_of(r.composition)) for r in real_records]
    np.testing.assert_array_equal(dm.targets, expected)
    assert len(set(expected)) >= 4  # 120 real minerals span several classes


# ----------------------------------------------------------------- the probe protocol
def test_probe_scores_separate_informative_from_useless_features():
    rng = np.random.default_rng(0)
    n, groups = 600, np.repeat(np.arange(120), 5)
    labels = rng.integers(0, 3, n)
    informative = np.eye(3)[labels] * 3.0 + rng.normal(size=(n, 3))  # class signal + noise
    noise = rng.normal(size=(n, 8)) * 1e3  # any scale: the probe standardises
    assert probe_scores(informative, labels, groups, "classification").mean() > 0.85
    chance = probe_scores(noise, labels, groups, "classification").mean()
    assert abs(chance - 1 / 3) < 0.08
    values = informative[:, 0] * 2.0 + 1.0  # exactly linear in the features
    assert probe_scores(informative, values, groups, "regression", strength=1e-6).max() < 1e-4
    baseline = constant_scores(values, groups, "regression")
    assert baseline.shape == (5,) and baseline.min() > 0.5


def test_probe_folds_keep_papers_on_one_side():
    """A probe that could see a paper's other structures would score a paper-id feature well;
    held-out papers make that feature useless."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 10)
    labels = rng.integers(0, 2, 60)[groups]  # one label per paper
    paper_id = np.eye(60)[groups]  # a feature that identifies the paper, nothing else
    accuracy = probe_scores(paper_id, labels, groups, "classification", strength=100.0)
    assert abs(accuracy.mean() - 0.5) < 0.2


def test_batch_norm_recalibration_changes_statistics_not_weights(records_file, tmp_path):
    dm = mineral_class_data(records_file, tmp_path / "cache")
    like = PropertyModule(
        task="classification",
        num_classes=len(MINERAL_CLASSES),
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        freeze_encoder=True,
    )
    model = random_encoder(like, seed=3)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    dataset = dm.labelled_dataset()
    batches = [dm.collate([dataset[i] for i in range(start, start + 40)]) for start in (0, 40, 80)]
    before = encode_features(model, batches)
    recalibrate_batch_norm(model, batches)
    after = encode_features(model, batches)
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    assert not model.crystal_tower.training
    norms = [m for m in model.crystal_tower.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(m.running_mean.abs().sum() > 0 for m in norms)
    assert np.abs(after).max() < np.abs(before).max()  # activations brought back to scale
    assert np.allclose(encode_features(random_encoder(like, seed=3), batches), before)


# ----------------------------------------------------------------- the claim, on a real run
CLAIM_STRUCTURES = 3000
CLAIM_EPOCHS = 8
CLAIM_GRAPH = GraphConfig(radius=6.0, max_neighbors=12)


@pytest.mark.slow
def test_pretrained_encoder_beats_random_init_on_a_linear_probe(tmp_path):
    """Pretrain CLaSP (default CGCNN, frozen MiniLM titles) on 3,000 structures of the embedded
    data, then probe each structure's mineral class from frozen tower features, 5-fold by paper,
    against the same architecture randomly initialised with batch-norm statistics recomputed on
    the same structures (two seeds). Pretraining must win by 0.03 on average and on every fold.

    Measured with pretraining seeds 0, 1, 2 and 3: pretrained won every fold each time, mean
    accuracy 0.926 (seed 0) and 0.930 (seed 3) vs random 0.874 and 0.863, majority class 0.282.
    4 epochs instead of 8 gave 0.896 and lost one fold, so 8 it is (about 60 s of pretraining)."""
    records = tmp_path / "amcsd3000.jsonl.gz"
    write_records(first_records(CLAIM_STRUCTURES), records)
    L.seed_everything(0)
    clasp = CLaSPModule(
        text=TextConfig(model="minilm", freeze=True),
        crystal=CGCNNConfig(),
        graph=CLAIM_GRAPH,
        heads=HeadsConfig(),
        optim=OptimConfig(warmup_steps=20),
    )
    pairs = CrystalTextDataModule(
        records=str(records),
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(model="minilm", freeze=True),
        caption_fields=["title"],
        max_length=64,
        graph=CLAIM_GRAPH,
        split_fractions=(1.0, 0.0, 0.0),
        batch_size=128,
        prepare_workers=2,
    )
    trainer = quiet_trainer(max_epochs=CLAIM_EPOCHS)
    start = time.perf_counter()
    trainer.fit(clasp, pairs)
    pretraining = time.perf_counter() - start
    checkpoint = tmp_path / "pretrained.ckpt"
    trainer.save_checkpoint(checkpoint)

    rows = run_probe(
        checkpoint,
        ProbeOptions(
            target="mineral_class",
            records=records,
            cache_dir=tmp_path / "cache",
            random_seeds=(0, 1),
            folds=5,
        ),
    )
    scores = {row.encoder: np.array(row.fold_scores) for row in rows}
    pretrained = scores.pop("pretrained (CLaSP)")
    majority = scores.pop("majority class")
    print(
        f"pretraining {pretraining:.0f} s; mineral-class probe accuracy: pretrained "
        f"{pretrained.mean():.3f}, "
        + ", ".join(f"{name} {s.mean():.3f}" for name, s in scores.items())
        + f", majority {majority.mean():.3f}"
    )
    for name, random in scores.items():
        assert random.mean() > majority.mean() + 0.3, name  # the baseline is a real one
        assert pretrained.mean() > random.mean() + 0.03, name
        assert np.all(pretrained > random), name


def tiny_checkpoint(path: Path) -> Path:
    """An untrained tiny CLaSP saved as a Lightning checkpoint at ``path``."""
    L.seed_everything(0)
    clasp = CLaSPModule(
        text=TextConfig(model="tiny-random", freeze=True),
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16, crystal_hidden=[24]),
    )
    return save_lightning_checkpoint(clasp, path)


def test_regression_probe_reports_mae_against_the_training_mean(perov_records, tmp_path):
    """perov_5 formation heat (eV/atom): ridge probes on tower features beat the mean."""
    rows = run_probe(
        tiny_checkpoint(tmp_path / "tiny.ckpt"),
        ProbeOptions(
            target="heat_ref",
            records=perov_records,
            cache_dir=tmp_path / "cache",
            random_seeds=(0,),
            folds=3,
        ),
    )
    assert [row.encoder for row in rows][0] == "training mean"
    assert all(row.metric == "MAE" for row in rows)
    mean_mae = rows[0].mean
    assert 0.2 < mean_mae < 2.0  # eV/atom
    for row in rows[1:]:
        assert row.mean < 0.95 * mean_mae, row.encoder


def test_probe_command_writes_its_report(tmp_path):
    """``clasp probe`` on a tiny checkpoint: the table and JSON name every encoder."""
    records = tmp_path / "amcsd120.jsonl.gz"
    write_records(first_records(120), records)
    checkpoint = tiny_checkpoint(tmp_path / "run" / "checkpoints" / "tiny.ckpt")
    argv = ["probe", "--ckpt", str(checkpoint), "--records", str(records)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--random-seeds", "0", "--folds", "3"]
    assert clasp_main(argv + ["--head", "--raw-random"]) == 0
    out = Path(tmp_path / "run" / "probe-mineral_class")
    report = json.loads((out / "probe.json").read_text())
    encoders = [row["encoder"] for row in report["rows"]]
    assert encoders == [
        "majority class",
        "pretrained (CLaSP)",
        "random init (seed 0)",
        "random init, no BN recalibration (seed 0)",
    ]
    assert report["features"] == "projection head"
    assert all(len(row["fold_scores"]) == 3 for row in report["rows"])
    assert all(0.0 <= s <= 1.0 for row in report["rows"] for s in row["fold_scores"])
    assert "| pretrained (CLaSP) |" in (out / "probe.md").read_text()
