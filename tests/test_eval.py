"""`clasp fit` then `clasp eval` on a tiny config: the report, its baselines and its plots."""

from __future__ import annotations

import json

import pytest
import torch

from clasp_pl.cli import main
from clasp_pl.evaluation.evaluate import default_checkpoint, evaluate, hybrid_ranks, lexical_scores
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, records_file):
    """A 3-epoch tiny run, launched from its own folder (runs/ and caches land there)."""
    run = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run)
        fit(records_file)
    return run


def fit(records_file):
    main(
        [
            "fit",
            "--config",
            str(REPO / "conf/trainer/cpu.yaml"),
            "--config",
            str(REPO / "conf/data/amcsd.yaml"),
            "--config",
            str(REPO / "conf/model/clasp.yaml"),
            "--config",
            str(REPO / "conf/model/tiny.yaml"),
            "--data.records",
            str(records_file),
            "--data.split_fractions",
            "[0.6, 0.2, 0.2]",
            "--data.batch_size",
            "16",
            "--data.prepare_workers",
            "1",
            "--trainer.max_epochs",
            "3",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )


def test_fit_writes_checkpoints_events_and_config(trained_run):
    ckpts = sorted(p.name for p in (trained_run / "runs/pretrain/checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(name.startswith("best-") for name in ckpts)
    assert list((trained_run / "runs").rglob("events.out.tfevents.*"))
    assert list((trained_run / "runs").rglob("config.yaml"))
    assert default_checkpoint(trained_run / "runs/pretrain").name.startswith("best-")
    state = torch.load(trained_run / "runs/pretrain/checkpoints/last.ckpt", weights_only=True)
    assert "val/t2s_group_R@10" in json.dumps(list(state["callbacks"]))


def test_eval_writes_table_with_baselines_and_plots(trained_run):
    ckpt = trained_run / "runs/pretrain/checkpoints/last.ckpt"
    out = trained_run / "eval"
    report = evaluate(ckpt, "test", out, REPO / "conf/eval/amcsd_keywords.yaml")
    methods = report["methods"]
    alpha = report["hybrid_alpha"]
    assert set(methods) == {
        "CLaSP (this checkpoint)",
        "untrained (same architecture)",
        "lexical (formulas/elements in text)",
        "random (expected)",
        f"hybrid: CLaSP + {alpha:g} x lexical (α from val)",
    }
    assert (ckpt.parent / "alpha.json").is_file()
    for metrics in methods.values():
        assert 0.0 <= metrics["t2s_pair_R@1"] <= metrics["t2s_pair_R@10"] <= 1.0
        assert metrics["t2s_pair_R@10"] <= metrics["t2s_group_R@10"] + 1e-9
    n = report["n_pairs"]
    assert methods["random (expected)"]["t2s_pair_R@10"] == pytest.approx(min(10, n) / n)
    for name in (
        "metrics.json",
        "metrics.md",
        "recall_at_k.png",
        "embedding_map_crystal_system.png",
        "embedding_map_keywords.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "lexical" in (out / "metrics.md").read_text()


def test_lexical_baseline_ranks_a_formula_title_first():
    from clasp_pl.data.records import CrystalRecord
    from clasp_pl.evaluation.evaluate import SplitEmbeddings

    def record(i, species, title):
        return CrystalRecord(
            id=str(i),
            lattice=[[4, 0, 0], [0, 4, 0], [0, 0, 4]],
            species=species,
            frac_coords=[[0.1 * k, 0, 0] for k in range(len(species))],
            title=title,
        )

    records = [
        record(0, ["Mg", "Mg", "Si", "O", "O", "O", "O"], "Forsterite Mg2SiO4 at high pressure"),
        record(1, ["Fe", "O"], "Magnetic order in FeO"),
        record(2, ["Na", "Cl"], "The structure of a salt"),
    ]
    split = SplitEmbeddings(torch.zeros(3, 1), torch.zeros(3, 1), torch.arange(3), records)
    pair, _ = hybrid_ranks(split, lexical_scores(split, ["title"]), 1.0, learned=False)["t2s"]
    assert pair[:2].tolist() == [1, 1]
