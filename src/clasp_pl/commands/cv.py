"""``clasp cv``: k-fold cross-validation by paper, one model per fold, and its table.

Usage::

    clasp cv --folds 5 --out runs/cv/default --preset pretrain          # fit arguments follow
    clasp cv --folds 5 --out runs/cv/default --row "composition=--preset composition" \
        --preset pretrain --trainer.max_epochs 10
    clasp cv table runs/cv/default fused=runs/cv/fused --out runs/cv/ablation.md
    clasp cv --folds 5 --only-folds 0 --out runs/cv/siglip --preset composition \
        --model.loss.kind siglip                                          # a quick row: fold 0
    clasp cv table --folds 0 runs/cv/composition siglip=runs/cv/siglip    # compared on fold 0

Every option ``clasp cv`` does not know is a ``clasp fit`` argument of the main model (default
``--preset pretrain``). For fold ``f`` of ``K`` the model is trained with ``--data.num_folds K
--data.fold f`` (:func:`clasp_pl.data.split.split_indices`: test = fold ``f``, every paper tested
once) under ``OUT/model/fold-f/``, then its last checkpoint (the final averaged weights;
``--checkpoint best``: the best on validation) is evaluated on its test split as ``clasp eval``
does (``OUT/model/fold-f/eval-test/``, ``eval-test-best/``; without the t-SNE maps). ``--row NAME=ARGS`` trains one more
model per fold with the ``clasp fit`` arguments ``ARGS`` (a row of the table named ``NAME``, under
``OUT/NAME/``). Folds run one after the other; a fold whose training finished and whose report
exists is skipped, an interrupted training resumes from its ``last.ckpt``.

``OUT/cv.json`` and ``OUT/cv.md`` hold each row's mean ± std over folds
(:mod:`clasp_pl.evaluation.cv_table`), the pair ceiling, the description queries and the keyword
screening of the out-of-fold scores pooled over all folds. ``clasp cv table [LABEL=]RUN...``
merges several runs' tables into one markdown table (the first run whole, the trained rows of
the others named by their label, default the folder name).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clasp_pl.api import default_device
from clasp_pl.checkpoints import CHECKPOINT_CHOICES, CheckpointChoice, find_checkpoint
from clasp_pl.commands.fit import CLaSPCLI, run_lightning_cli
from clasp_pl.commands.options import command_parser
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.errors import UserError
from clasp_pl.evaluation import cv_table
from clasp_pl.evaluation.evaluate import EvalOptions, evaluate
from clasp_pl.evaluation.keyword_scores import KEYWORD_SCORES, KeywordScores, pool, pooled_screening
from clasp_pl.evaluation.zero_shot import load_keyword_config
from clasp_pl.models.clasp import CLaSPModule

logger = logging.getLogger(__name__)

MAIN_ROW = "model"
"""The folder (and default label) of the main model's folds."""
DEFAULT_FIT = ("--preset", "pretrain")
FIT_DONE = "fit.json"
"""Written in a fold's folder when its training has finished: ``{"seconds": wall time}``."""


@dataclass(frozen=True)
class TrainedRow:
    """A model trained once per fold: its table ``name`` and ``clasp fit`` arguments."""

    name: str
    fit_args: tuple[str, ...]


@dataclass(frozen=True)
class FoldRun:
    """The folder of one fold of one trained row, and which of its checkpoints is evaluated.

    Attributes:
        folder: ``OUT/<row>/fold-<f>``: ``checkpoints/``, :data:`FIT_DONE`, ``eval-test/``
            (the report of the last checkpoint) or ``eval-test-best/`` (of the best one).
        checkpoint: ``last`` (the final, averaged weights) or ``best`` (best on validation).
    """

    folder: Path
    checkpoint: CheckpointChoice = "last"

    @property
    def report(self) -> Path:
        suffix = "" if self.checkpoint == "last" else f"-{self.checkpoint}"
        return self.folder / f"eval-test{suffix}" / "metrics.json"

    @property
    def fit_done(self) -> Path:
        return self.folder / FIT_DONE

    def fit_seconds(self) -> float:
        return float(json.loads(self.fit_done.read_text())["seconds"])


def parse_row(text: str) -> TrainedRow:
    """``NAME=ARGS`` (``ARGS`` split like a shell line) -> :class:`TrainedRow`.

    Raises:
        UserError: no ``=``, an empty name, or a name that is not a plain folder name.
    """
    name, sep, args = text.partition("=")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise UserError(
            "--row",
            f"not NAME=ARGS: {text!r}",
            'write e.g. --row "composition=--preset composition"',
        )
    return TrainedRow(name, tuple(shlex.split(args)))


def fit_fold(row: TrainedRow, run: FoldRun, folds: int, fold: int) -> None:
    """Train ``row``'s model of fold ``fold`` of ``folds`` into ``run.folder`` (resuming from
    its ``last.ckpt`` when an earlier training was interrupted)."""
    last = run.folder / "checkpoints" / "last.ckpt"
    argv = [
        "fit",
        *row.fit_args,
        "--data.num_folds",
        str(folds),
        "--data.fold",
        str(fold),
        "--trainer.logger.init_args.save_dir",
        str(run.folder.parent),
        "--trainer.logger.init_args.name",
        run.folder.name,
        *(["--ckpt_path", str(last)] if last.is_file() else []),
    ]
    logger.info("cv: training %s fold %d/%d: clasp %s", row.name, fold, folds, shlex.join(argv))
    start = time.perf_counter()
    run_lightning_cli(CLaSPCLI, CLaSPModule, CrystalTextDataModule, argv)
    run.fit_done.write_text(json.dumps({"seconds": time.perf_counter() - start}))


@dataclass(frozen=True)
class FoldEvaluation:
    """How each fold's test split is evaluated: the keyword-screening YAML (None: the
    packaged default), the torch device and which checkpoint of the fold
    (:func:`~clasp_pl.checkpoints.find_checkpoint`)."""

    keywords_file: Path | None
    device: str
    checkpoint: CheckpointChoice = "last"


def run_fold(
    row: TrainedRow, run: FoldRun, folds: int, fold: int, evaluation: FoldEvaluation
) -> dict:
    """Train (unless finished) and evaluate (unless reported) one fold; its report."""
    if run.fit_done.is_file() and run.report.is_file():
        logger.info("cv: %s fold %d done already (%s)", row.name, fold, run.report)
        return json.loads(run.report.read_text())
    if not run.fit_done.is_file():
        fit_fold(row, run, folds, fold)
    ckpt = find_checkpoint(run.folder / "checkpoints", run.checkpoint)
    fold_options = EvalOptions(
        ckpt,
        "test",
        run.report.parent,
        evaluation.keywords_file,
        device=evaluation.device,
        composition_run=None,
        maps=False,
    )
    return evaluate(fold_options)


def pooled_keyword_screening(runs: Sequence[FoldRun], keywords_file: Path | None) -> dict | None:
    """Screening of the out-of-fold keyword scores of ``runs`` pooled; None without keywords."""
    files = [run.report.parent / KEYWORD_SCORES for run in runs]
    config = load_keyword_config(keywords_file)
    if config is None or not all(f.is_file() for f in files):
        return None
    pooled = pool([KeywordScores.load(f) for f in files])
    result = pooled_screening(pooled, int(config.get("min_positives", 5)))
    return result._asdict()


def cross_validate(
    out: Path,
    folds: int,
    rows: Sequence[TrainedRow],
    evaluation: FoldEvaluation,
    fold_ids: Sequence[int] | None = None,
) -> cv_table.CVTable:
    """Train and evaluate every row on every fold (or on the folds ``fold_ids`` only); write and
    return ``OUT/cv.json`` + ``cv.md``. The first of ``rows`` is the main model (its reports
    give the baselines)."""
    fold_ids = list(range(folds)) if fold_ids is None else list(fold_ids)
    reports: dict[str, list[dict]] = {row.name: [] for row in rows}
    runs: dict[str, list[FoldRun]] = {row.name: [] for row in rows}
    for fold in fold_ids:
        for row in rows:
            run = FoldRun(out / row.name / f"fold-{fold}", evaluation.checkpoint)
            reports[row.name].append(run_fold(row, run, folds, fold, evaluation))
            runs[row.name].append(run)
    trained = {
        row.name: {
            "fit_args": list(row.fit_args),
            "fit_seconds": sum(r.fit_seconds() for r in runs[row.name]) / len(fold_ids),
        }
        for row in rows
    }
    table = cv_table.aggregate(reports[rows[0].name], reports, trained, folds, fold_ids)
    for row in rows:
        screening = pooled_keyword_screening(runs[row.name], evaluation.keywords_file)
        if screening is not None:
            table.screening[row.name] = screening
    table.save(out / "cv.json")
    (out / "cv.md").write_text(cv_table.markdown(table))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "clasp cv",
        "K-fold cross-validation by paper: one model per fold, mean ± std per row. Options it "
        "does not know are `clasp fit` arguments of the main model (default --preset pretrain). "
        "`clasp cv table [LABEL=]RUN...` merges runs into one table.",
    )
    parser.allow_abbrev = False
    parser.add_argument("--folds", type=int, required=True, help="K, the number of folds (>= 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/cv"), help="output folder")
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="another model trained per fold with these `clasp fit` arguments, e.g. "
        '"composition=--preset composition" (repeatable)',
    )
    parser.add_argument(
        "--only-folds",
        type=fold_list,
        metavar="F,F...",
        help="train and test these folds only (e.g. 0 or 0,1), for a quick ablation row; the "
        "table says which (merge it with `clasp cv table --folds` of a full run)",
    )
    parser.add_argument("--label", default=MAIN_ROW, help="the main model's row name (and folder)")
    parser.add_argument("--keywords", type=Path, help="keyword-screening YAML (as clasp eval)")
    parser.add_argument("--device", default=default_device(), help="torch device of evaluation")
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINT_CHOICES,
        default="last",
        help="which checkpoint of each fold is evaluated: last (default: the final weights, "
        "averaged by conf/trainer/cpu.yaml's WeightEMA) or best (best validation group R@10)",
    )
    return parser


def table_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "clasp cv table", "Merge the cv.json of several `clasp cv` runs into one markdown table."
    )
    parser.add_argument(
        "runs", nargs="+", metavar="[LABEL=]RUN", help="run folders (the first one whole)"
    )
    parser.add_argument(
        "--folds",
        type=fold_list,
        metavar="F,F...",
        help="compare on these folds only (e.g. those of an --only-folds run)",
    )
    parser.add_argument("--out", type=Path, help="write the table here too (markdown)")
    return parser


def fold_list(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (argparse type of ``--only-folds``/``--folds``)."""
    try:
        folds = [int(word) for word in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of folds: {text!r}") from None
    if len(set(folds)) < len(folds) or min(folds) < 0:
        raise argparse.ArgumentTypeError(f"folds must be distinct and >= 0: {text!r}")
    return folds


def table_main(argv: Sequence[str]) -> int:
    """``clasp cv table``: print (and write) the merged table."""
    args = table_parser().parse_args(argv)
    tables = []
    for word in args.runs:
        label, sep, folder = word.rpartition("=")
        path = Path(folder) / "cv.json"
        if not path.is_file():
            raise UserError(path, "no such file", "run `clasp cv --out FOLDER` first")
        tables.append((label if sep else Path(folder).name, cv_table.CVTable.load(path)))
    try:
        if args.folds is not None:
            tables = [(label, cv_table.restrict(table, args.folds)) for label, table in tables]
        merged = cv_table.merge(tables)
    except ValueError as error:
        raise UserError(args.runs[0], str(error), "merge runs of the same folds") from error
    text = cv_table.markdown(merged)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clasp cv`` (or ``clasp cv table``); returns the exit status."""
    argv = list(argv or [])
    if argv[:1] == ["table"]:
        return table_main(argv[1:])
    args, fit_args = build_parser().parse_known_args(argv)
    if args.folds < 2:
        raise UserError("--folds", f"{args.folds} folds", "use at least 2")
    if args.only_folds and max(args.only_folds) >= args.folds:
        raise UserError(
            "--only-folds", f"{args.only_folds} of {args.folds} folds", "use 0..K-1 (K: --folds)"
        )
    if args.keywords is not None and not args.keywords.is_file():
        raise UserError(args.keywords, "no such file (--keywords)", "check the path of --keywords")
    rows = [TrainedRow(args.label, tuple(fit_args) or DEFAULT_FIT)]
    rows += [parse_row(text) for text in args.row]
    if len({row.name for row in rows}) < len(rows):
        raise UserError("--row", "two rows share a name", "give every row its own NAME")
    args.out.mkdir(parents=True, exist_ok=True)
    evaluation = FoldEvaluation(args.keywords, args.device, args.checkpoint)
    cross_validate(args.out, args.folds, rows, evaluation, args.only_folds)
    print((args.out / "cv.md").read_text())
    print(f"cv.json and cv.md in {args.out}/")
    return 0
