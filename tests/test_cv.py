"""`clasp cv` on the tiny model: one model per fold, every paper tested once, resumable; the
table of mean ± std, an extra trained row, and `clasp cv table` merging runs."""

from __future__ import annotations

import json
import logging
import shlex

import numpy as np
import pytest

from clasp_pl.checkpoints import find_checkpoint, read_settings
from clasp_pl.cli import main
from clasp_pl.evaluation.cv_table import HYBRID_ROW, CVTable, aggregate, merge, restrict
from clasp_pl.evaluation.split import load_datamodule
from helpers.data import REPO
from helpers.fit import TINY_CONFIGS

KEYWORDS_YAML = REPO / "conf/eval/amcsd_keywords.yaml"
FOLDS = 2
FIT_ARGS = [
    *TINY_CONFIGS,
    "--data.split_fractions",
    "[0.7, 0.3, 0.0]",
    "--data.batch_size",
    "16",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, records_file):
    """A 2-fold run of the tiny model plus a second trained row (another seed)."""
    folder = tmp_path_factory.mktemp("cv")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(cv_command(records_file)) == 0
    return folder


def cv_command(records_file) -> list[str]:
    fit = [*FIT_ARGS, "--data.records", str(records_file)]
    second = shlex.join([*fit, "--seed_everything", "1"])
    return [
        "cv",
        "--folds",
        str(FOLDS),
        "--out",
        "cv",
        "--keywords",
        str(KEYWORDS_YAML),
        "--device",
        "cpu",
        "--row",
        f"second={second}",
        *fit,
    ]


@pytest.fixture(autouse=True)
def in_run_folder(cv_run, monkeypatch):
    monkeypatch.chdir(cv_run)


def fold_split_records(cv_run, row: str, fold: int) -> dict[str, tuple[set[int], set[int]]]:
    """split -> (record rows, paper ids) of one fold, from its checkpoint's data settings."""
    ckpt = find_checkpoint(cv_run / "cv" / row / f"fold-{fold}" / "checkpoints")
    datamodule = load_datamodule(read_settings(ckpt).require_data())
    out = {}
    for name, dataset in datamodule.datasets.items():
        ids = dataset.item_ids
        out[name] = (
            set(dataset.graphs.field("record_index")[ids].tolist()),
            set(dataset.graphs.field("group_id")[ids].tolist()),
        )
    return out


def test_every_paper_is_tested_exactly_once_and_splits_are_disjoint(cv_run):
    tested_records: list[int] = []
    tested_papers: list[int] = []
    all_records: set[int] = set()
    for fold in range(FOLDS):
        splits = fold_split_records(cv_run, "model", fold)
        (train, train_p), (val, val_p), (test, test_p) = (
            splits[s] for s in ("train", "val", "test")
        )
        assert not (train_p & val_p or train_p & test_p or val_p & test_p)
        assert train and val and test
        tested_records += sorted(test)
        tested_papers += sorted(test_p)
        all_records |= train | val | test
        assert fold_split_records(cv_run, "second", fold)["test"] == splits["test"]
    assert sorted(tested_records) == sorted(all_records)  # each pair tested once
    assert len(tested_papers) == len(set(tested_papers))
    table = CVTable.load(cv_run / "cv" / "cv.json")
    assert sum(table.pairs_per_fold) == len(all_records)


def test_table_has_mean_and_std_of_every_row(cv_run):
    table = CVTable.load(cv_run / "cv" / "cv.json")
    assert table.folds == FOLDS
    for row in ("model", "second", "lexical (formulas/elements in text)", HYBRID_ROW):
        stat = table.rows[row]["t2s_group_R@10"]
        assert len(stat.per_fold) == FOLDS
        assert stat.mean == pytest.approx(np.mean(stat.per_fold))
        assert stat.std == pytest.approx(np.std(stat.per_fold, ddof=1))
    reports = [
        json.loads((cv_run / f"cv/model/fold-{f}/eval-test/metrics.json").read_text())
        for f in range(FOLDS)
    ]
    per_fold = [r["methods"]["CLaSP (this checkpoint)"]["s2t_pair_R@5"] for r in reports]
    assert table.rows["model"]["s2t_pair_R@5"].per_fold == pytest.approx(per_fold)
    assert set(table.trained) == {"model", "second"}
    assert "--seed_everything" in table.trained["second"]["fit_args"]
    assert table.trained["model"]["fit_seconds"] > 0
    text = (cv_run / "cv" / "cv.md").read_text()
    assert "| second |" in text and " ± " in text and "fit seconds / fold" in text


def test_keyword_screening_pools_the_out_of_fold_scores(cv_run):
    table = CVTable.load(cv_run / "cv" / "cv.json")
    screening = table.screening["model"]
    assert screening["n_structures"] == sum(table.pairs_per_fold)
    assert len(screening["scored"]) + len(screening["skipped"]) == 16  # the keywords file's
    if screening["scored"]:
        low, high = screening["roc_auc_interval"]
        assert low <= screening["mean_roc_auc"] <= high


def test_a_finished_run_is_skipped(cv_run, records_file, caplog):
    ckpts = sorted((cv_run / "cv").rglob("*.ckpt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    caplog.set_level(logging.INFO)
    assert main(cv_command(records_file)) == 0
    assert caplog.text.count("done already") == 2 * FOLDS
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps


def test_cv_table_merges_runs(cv_run, capsys):
    assert main(["cv", "table", "cv", "again=cv", "--out", "merged.md"]) == 0
    text = (cv_run / "merged.md").read_text()
    assert "| again |" in text and "| again: second |" in text and "| model |" in text
    assert text in capsys.readouterr().out
    assert main(["cv", "table", "missing"]) == 2


def test_bad_row_is_refused(capsys):
    assert main(["cv", "--folds", "2", "--row", "no-equals-sign"]) == 2
    assert "--row" in capsys.readouterr().err


def fake_report(learned: float, hybrid_alpha: float, n_pairs: int = 10) -> dict:
    """A minimal ``metrics.json`` of one fold: the learned row, a hybrid row, the ceiling."""
    return {
        "n_pairs": n_pairs,
        "methods": {
            "CLaSP (this checkpoint)": {"t2s_group_R@10": learned},
            f"hybrid: CLaSP + {hybrid_alpha:g} x lexical (α from val)": {"t2s_group_R@10": 0.9},
        },
        "pair_ceiling": {"pair_R@10": 0.8},
        "description_queries": {"rows": {}},
    }


def test_aggregate_names_the_hybrid_row_across_folds_and_merge_checks_folds():
    reports = [fake_report(0.5, 0.1), fake_report(0.7, 0.3)]
    info = {"fit_args": ["--preset", "pretrain"], "fit_seconds": 1.0}
    table = aggregate(reports, {"model": reports}, {"model": info})
    assert set(table.rows) == {"model", HYBRID_ROW}
    stat = table.rows["model"]["t2s_group_R@10"]
    assert (stat.mean, stat.std) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert table.rows[HYBRID_ROW]["t2s_group_R@10"].std == 0.0
    other = aggregate(reports, {"fused": reports}, {"fused": info})
    assert set(merge([("base", table), ("fused", other)]).rows) == {"model", HYBRID_ROW, "fused"}
    three_folds = aggregate([*reports, fake_report(0.1, 0.1)], {"x": reports}, {"x": info})
    with pytest.raises(ValueError, match="folds"):
        merge([("base", table), ("x", three_folds)])


def test_only_folds_runs_a_subset_that_merges_with_a_full_run_cut_to_it(
    cv_run, records_file, tmp_path, monkeypatch
):
    import shutil

    shutil.copytree(cv_run / "cv", tmp_path / "part")
    shutil.rmtree(tmp_path / "part" / "model" / "fold-0")  # fold 0 is not needed: not redone
    monkeypatch.chdir(tmp_path)
    command = cv_command(records_file)
    command[command.index("--out") + 1] = "part"
    assert main([*command, "--only-folds", "1"]) == 0
    assert not (tmp_path / "part" / "model" / "fold-0").exists()
    part = CVTable.load(tmp_path / "part" / "cv.json")
    full = CVTable.load(cv_run / "cv" / "cv.json")
    assert (part.folds, part.fold_ids, part.all_folds) == (FOLDS, [1], False)
    assert part.rows["model"]["t2s_group_R@10"].per_fold == [
        full.rows["model"]["t2s_group_R@10"].per_fold[1]
    ]
    assert "Folds 1 of a 2-fold" in (tmp_path / "part" / "cv.md").read_text()
    with pytest.raises(ValueError, match="folds"):
        merge([("full", full), ("part", part)])
    assert main(["cv", "table", "--folds", "1", str(cv_run / "cv"), "part=part"]) == 0
    assert main(["cv", "table", "--folds", "0", "part"]) == 2  # fold 0 is not in that run
    assert main([*command, "--only-folds", "2"]) == 2  # only 2 folds


def test_restrict_cuts_every_statistic_to_the_folds():
    reports = [fake_report(0.5, 0.1, 10), fake_report(0.7, 0.3, 12), fake_report(0.9, 0.3, 14)]
    info = {"fit_args": [], "fit_seconds": 1.0}
    table = aggregate(reports, {"model": reports}, {"model": info})
    table.screening["model"] = {"pooled": True}
    cut = restrict(table, [2, 0])
    stat = cut.rows["model"]["t2s_group_R@10"]
    assert stat.per_fold == [0.9, 0.5] and stat.mean == pytest.approx(0.7)
    assert (cut.fold_ids, cut.pairs_per_fold, cut.screening) == ([2, 0], [14, 10], {})
    assert restrict(table, [0, 1, 2]).screening == table.screening
    one = restrict(table, [1])
    assert one.rows["model"]["t2s_group_R@10"].cell() == "0.700 (1 fold)"
    with pytest.raises(ValueError, match="not in this run"):
        restrict(one, [0])
