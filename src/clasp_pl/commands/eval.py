"""``clasp eval``: retrieval and keyword-screening report of a checkpoint on one split.

Usage::

    clasp eval                                   # last checkpoint of runs/pretrain, test split
    clasp eval --ckpt runs/pretrain/checkpoints/last.ckpt --split val

See :mod:`clasp_pl.evaluation.evaluate` for what the report holds.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from clasp_pl.api import default_device
from clasp_pl.checkpoints import PRETRAIN_RUN, find_checkpoint
from clasp_pl.commands.options import command_parser, default_of
from clasp_pl.data.text import CAPTION_FIELDS
from clasp_pl.evaluation.baselines import COMPOSITION_RUN
from clasp_pl.evaluation.evaluate import EvalOptions, evaluate
from clasp_pl.resources import DEFAULT_KEYWORDS

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "clasp eval", "Retrieval and keyword-screening report of a checkpoint on one split."
    )
    parser.add_argument(
        "--ckpt",
        type=Path,
        help=f"checkpoint (default: the last one of {PRETRAIN_RUN}: the final averaged weights)",
    )
    parser.add_argument(
        "--split", choices=("val", "test"), default=default_of(EvalOptions, "split")
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/eval-<split>)")
    parser.add_argument(
        "--keywords",
        type=Path,
        help=f"YAML with keywords, templates, min_positives (default: {DEFAULT_KEYWORDS}; "
        "no screening, with a note, when it is absent)",
    )
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument(
        "--composition-ckpt",
        type=Path,
        help="composition-only baseline, trained on the same records and split (default: the "
        f"last of {COMPOSITION_RUN}, written by make pretrain-composition; its row is left out "
        "if there is none or if it was trained on other records)",
    )
    parser.add_argument(
        "--caption-fields",
        nargs="+",
        choices=CAPTION_FIELDS,
        help="evaluate on these record fields instead of the checkpoint's own captions",
    )
    return parser


def options_of(args: argparse.Namespace, ckpt: Path) -> EvalOptions:
    """The :class:`EvalOptions` of ``clasp eval``'s parsed command line."""
    return EvalOptions(
        ckpt,
        args.split,
        args.out,
        args.keywords,
        device=args.device,
        caption_fields=tuple(args.caption_fields) if args.caption_fields else None,
        composition_ckpt=args.composition_ckpt,
        composition_run=None if args.composition_ckpt else COMPOSITION_RUN,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clasp eval``; returns the exit status."""
    args = build_parser().parse_args(argv)
    options = options_of(args, args.ckpt or find_checkpoint())
    logger.info(
        "evaluating %s on the %s split → %s", options.ckpt, options.split, options.report_dir
    )
    metrics = evaluate(options)
    print((options.report_dir / "metrics.md").read_text())
    alpha_note = metrics["hybrid_alpha_file"] or (
        "not stored: only a test-split evaluation with the checkpoint's own captions stores it"
    )
    print(f"hybrid α {metrics['hybrid_alpha']:g} ({alpha_note})")
    print(f"report, plots and metrics.json in {options.report_dir}/ ({metrics['n_pairs']} pairs)")
    return 0
