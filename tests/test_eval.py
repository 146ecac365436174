"""`clasp fit` then `clasp eval` on a tiny config: the report, its baselines and its plots."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from clasp_pl.checkpoints import find_checkpoint, read_settings
from clasp_pl.cli import main
from clasp_pl.data.keywords import write_keywords
from clasp_pl.data.records import CrystalRecord
from clasp_pl.evaluation.baselines import COMPOSITION_ROW, DifferentSplitError
from clasp_pl.evaluation.evaluate import EvalOptions, evaluate
from clasp_pl.evaluation.hybrid import hybrid_ranks
from clasp_pl.evaluation.split import SplitEmbeddings, split_lexical_scores
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.alpha_store import DEFAULT_ALPHA, load_alpha
from helpers.data import REPO
from helpers.fit import TINY_FIT
from helpers.lightning import save_lightning_checkpoint

KEYWORDS_YAML = REPO / "conf/eval/amcsd_keywords.yaml"
LEXICAL = "lexical (formulas/elements in text)"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, records_file):
    """A 3-epoch tiny run, launched from its own folder (runs/ and caches land there)."""
    run = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run)
        fit(records_file)
    return run


@pytest.fixture(autouse=True)
def in_run_folder(trained_run, monkeypatch):
    """Each test runs in the run's folder, where the checkpoint's relative data/cache is."""
    monkeypatch.chdir(trained_run)


def fit(records_file):
    main(
        [
            *TINY_FIT,
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
    assert find_checkpoint(trained_run / "runs/pretrain").name == "last.ckpt"
    assert find_checkpoint(trained_run / "runs/pretrain", "best").name.startswith("best-")
    state = torch.load(trained_run / "runs/pretrain/checkpoints/last.ckpt", weights_only=True)
    assert "val/t2s_group_R@10" in json.dumps(list(state["callbacks"]))


def test_eval_writes_table_with_baselines_and_plots(trained_run):
    ckpt = trained_run / "runs/pretrain/checkpoints/last.ckpt"
    out = trained_run / "eval"
    report = evaluate(EvalOptions(ckpt, "test", out, KEYWORDS_YAML))
    methods = report["methods"]
    alpha = report["hybrid_alpha"]
    assert set(methods) == {
        "CLaSP (this checkpoint)",
        "untrained (same architecture)",
        LEXICAL,
        "random (expected)",
        f"hybrid: CLaSP + {alpha:g} x lexical (α from val)",
    }
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
        "embedding_map.html",
    ):
        assert (out / name).stat().st_size > 0, name
    text = (out / "metrics.md").read_text()
    assert "lexical" in text
    ceiling = report["pair_ceiling"]
    assert f"pair_R@10 {ceiling['pair_R@10']:.3f}" in text
    for name, intervals in report["intervals"].items():  # every ranked row, every R@k
        assert len(intervals) == 2 * 2 * 3
        for key, (low, high) in intervals.items():
            assert low <= methods[name][key] <= high, (name, key)
        for direction in ("t2s", "s2t"):  # no ranking passes the split's ceiling
            assert methods[name][f"{direction}_pair_R@10"] <= ceiling["pair_R@10"] + 1e-9
    model = methods["CLaSP (this checkpoint)"]["t2s_pair_R@10"]
    low, high = report["intervals"]["CLaSP (this checkpoint)"]["t2s_pair_R@10"]
    assert f"{model:.3f} [{low:.3f}, {high:.3f}]" in text
    descriptions = report["description_queries"]
    assert all(n >= descriptions["min_relevant"] for n in descriptions["queries"].values())
    if descriptions["queries"]:  # 16 test pairs here: maybe no label pair is frequent enough
        assert set(descriptions["rows"]) == {
            "CLaSP (query text embedding vs structures)",
            "lexical (formulas/elements in the query)",
            "random (expected)",
        }
    else:
        assert not descriptions["rows"] and "No label pair has enough" in text
    assert "Description queries" in text and (out / "keyword_scores.npz").is_file()


def test_alpha_is_stored_per_checkpoint_file(trained_run):
    """A test-split evaluation stores α for that checkpoint file only: another checkpoint of the
    folder, or the same file overwritten since (like last.ckpt), gets the default."""
    folder = trained_run / "runs/pretrain/checkpoints"
    ckpt = Path(shutil.copy(folder / "last.ckpt", folder / "alpha-test.ckpt"))
    report = evaluate(EvalOptions(ckpt, "test", trained_run / "eval-alpha", KEYWORDS_YAML))
    stored = folder / "alpha-test.ckpt.alpha.json"
    assert report["hybrid_alpha_file"] == str(stored)
    assert load_alpha(ckpt) == (report["hybrid_alpha"], f"stored with the model ({stored})")
    assert not (folder / "alpha.json").exists()
    best = find_checkpoint(trained_run / "runs/pretrain", "best")
    assert load_alpha(best)[0] == DEFAULT_ALPHA and "no best-" in load_alpha(best)[1]
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "global_step": state["global_step"] + 1}, ckpt)  # overwritten in place
    assert load_alpha(ckpt) == (
        DEFAULT_ALPHA,
        "default (alpha-test.ckpt.alpha.json was chosen for another version of the file)",
    )


def test_val_split_labels_the_hybrid_in_sample_and_stores_no_alpha(trained_run):
    folder = trained_run / "runs/pretrain/checkpoints"
    ckpt = Path(shutil.copy(folder / "last.ckpt", folder / "val-only.ckpt"))
    report = evaluate(EvalOptions(ckpt, "val", trained_run / "eval-val", KEYWORDS_YAML))
    alpha = report["hybrid_alpha"]
    assert f"hybrid: CLaSP + {alpha:g} x lexical (α from val, in-sample)" in report["methods"]
    assert report["hybrid_alpha_file"] is None
    assert not list(folder.glob("val-only*.json"))
    other_captions = ("title", "abstract")  # not the checkpoint's own ([title])
    options = EvalOptions(ckpt, "test", trained_run / "eval-other", caption_fields=other_captions)
    report = evaluate(options)
    assert report["hybrid_alpha_file"] is None


def with_data_settings(source: Path, target: Path, **changes) -> Path:
    """A copy of checkpoint ``source`` whose data-module settings are updated by ``changes``."""
    state = torch.load(source, weights_only=True)
    state["datamodule_hyper_parameters"] = {**state["datamodule_hyper_parameters"], **changes}
    torch.save(state, target)
    return target


def test_keyword_captions_come_from_the_checkpoints_keywords_file(
    trained_run, real_records, monkeypatch
):
    """A stage-2 checkpoint (data.keywords, keyword captions) is evaluated on its keywords:
    with each record's formula as its only keyword, the lexical baseline ranks every structure
    among the (at most 10) structures of its formula."""
    monkeypatch.chdir(trained_run)
    keywords = trained_run / "keywords.json"
    write_keywords({r.id: [r.composition.reduced_formula] for r in real_records}, keywords)
    ckpt = with_data_settings(
        trained_run / "runs/pretrain/checkpoints/last.ckpt",
        trained_run / "runs/pretrain/checkpoints/stage2.ckpt",
        keywords=str(keywords),
        caption_fields=["keywords"],
    )
    report = evaluate(EvalOptions(ckpt, "test", trained_run / "eval-keywords", KEYWORDS_YAML))
    formulas = [r.composition.reduced_formula for r in real_records]
    assert max(formulas.count(f) for f in formulas) <= 10
    assert report["methods"][LEXICAL]["t2s_pair_R@10"] == 1.0


def composition_checkpoint_file(trained_run: Path, name: str, **data_changes) -> Path:
    """An (untrained) composition-only checkpoint with the pretraining run's data settings
    updated by ``data_changes``, under ``runs/composition/checkpoints/``."""
    source = trained_run / "runs/pretrain/checkpoints/last.ckpt"
    hparams = read_settings(source).model  # LightningCLI's private entries left out
    module = CLaSPModule(**{**hparams, "crystal_encoder": "composition"})
    path = save_lightning_checkpoint(module, trained_run / f"runs/composition/checkpoints/{name}")
    return with_data_settings(source, path, composition_features=True, **data_changes)


def test_composition_baseline_of_other_records(trained_run, monkeypatch, caplog):
    """Found automatically under runs/composition: a baseline of other records, or split
    differently, is left out with a warning; named with --composition-ckpt it is an error; one
    of the same split is a row."""
    monkeypatch.chdir(trained_run)
    ckpt = str(trained_run / "runs/pretrain/checkpoints/last.ckpt")
    automatic = ["eval", "--ckpt", ckpt, "--out", "eval-auto", "--keywords", str(KEYWORDS_YAML)]
    for changes, reason in [
        ({"records": "elsewhere.jsonl.gz"}, "was trained on elsewhere.jsonl.gz"),
        ({"split_seed": 1}, "was trained on another split or dataset"),
    ]:
        other = composition_checkpoint_file(trained_run, "best-other.ckpt", **changes)
        caplog.clear()
        assert main(automatic) == 0
        assert reason in caplog.text
        methods = json.loads((trained_run / "eval-auto/metrics.json").read_text())["methods"]
        assert COMPOSITION_ROW not in methods and "CLaSP (this checkpoint)" in methods

    named = ["eval", "--ckpt", ckpt, "--out", "eval-named", "--composition-ckpt"]
    with pytest.raises(DifferentSplitError):
        main([*named, str(other)])
    same = composition_checkpoint_file(trained_run, "same-split.ckpt")
    assert main([*named, str(same)]) == 0
    methods = json.loads((trained_run / "eval-named/metrics.json").read_text())["methods"]
    assert COMPOSITION_ROW in methods
    shutil.rmtree(trained_run / "runs/composition")


def test_named_files_must_exist_and_defaults_come_from_the_package(
    trained_run, monkeypatch, capsys, caplog
):
    monkeypatch.chdir(trained_run)  # no conf/ nor runs/composition/ here: the package has conf
    caplog.set_level(logging.INFO)
    ckpt = str(trained_run / "runs/pretrain/checkpoints/last.ckpt")
    for option in ("--keywords", "--composition-ckpt"):
        assert main(["eval", "--ckpt", ckpt, option, "missing.file"]) == 2
        assert capsys.readouterr().err == (
            f"error: missing.file: no such file ({option}); check the path of {option}\n"
        )
    assert not (trained_run / "runs/pretrain/eval-test").exists()  # failed before any work
    assert main(["eval", "--ckpt", ckpt, "--out", "eval-defaults"]) == 0
    assert "no checkpoint under runs/composition/" in caplog.text
    assert (trained_run / "eval-defaults/screening.md").is_file()  # the packaged keyword file


def test_lexical_baseline_ranks_a_formula_title_first():
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
    captions = [r.title for r in records]
    split = SplitEmbeddings(
        torch.zeros(3, 1), torch.zeros(3, 1), torch.arange(3), torch.arange(3), records, captions
    )
    pair, _ = hybrid_ranks(split, split_lexical_scores(split), 1.0, learned=False)["t2s"]
    assert pair[:2].tolist() == [1, 1]
