"""The files of a ``clasp eval`` report folder (see :mod:`clasp_pl.evaluation.evaluate`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from clasp_pl.evaluation import plots
from clasp_pl.evaluation.description_queries import DescriptionReport, description_table
from clasp_pl.evaluation.metrics import BidirectionalRanks, summarise_ranks
from clasp_pl.evaluation.screening import ScreeningResult

TABLE_KEYS = (
    "pair_R@1",
    "pair_R@5",
    "pair_R@10",
    "group_R@1",
    "group_R@5",
    "group_R@10",
    "pair_median_rank",
)
"""Columns of ``metrics.md`` (each direction's)."""
CURVE_KS = tuple(range(1, 51))
"""The k of the Recall@k curves of ``recall_at_k.png``."""


def default_out_dir(ckpt: Path, split: str, caption_fields: Sequence[str] | None) -> Path:
    """``<run>/eval-<split>[-<fields>]`` beside the run's ``checkpoints/`` folder."""
    suffix = "-" + "-".join(caption_fields) if caption_fields else ""
    return ckpt.parent.parent / f"eval-{split}{suffix}"


def write_retrieval(
    report: Mapping[str, Any],
    ranks: Mapping[str, BidirectionalRanks],
    out_dir: Path,
    descriptions: DescriptionReport,
) -> None:
    """Write ``metrics.md`` (the report's ``methods`` table with its intervals, the split's pair
    Recall@k ceiling and the description queries) and ``recall_at_k.png`` (pair Recall@k for
    k = 1..50 of every ranked method)."""
    table = plots.markdown_table(report["methods"], TABLE_KEYS, report, report["intervals"])
    ceiling = ", ".join(f"{key} {value:.3f}" for key, value in report["pair_ceiling"].items())
    notes = [
        f"Intervals: {report['interval_note']}.",
        f"Pair Recall@k ceiling of this split ({ceiling}): structures sharing an identical "
        "caption cannot be told apart; the best ranking gets min(k, s)/s of a caption's s pairs.",
        "",
    ]
    (out_dir / "metrics.md").write_text("\n".join([table, *notes, description_table(descriptions)]))
    curves = {
        name: {
            direction: summarise_ranks(pair_group[0], CURVE_KS)
            for direction, pair_group in r.items()
        }
        for name, r in ranks.items()
    }
    plots.recall_curves(curves, CURVE_KS, out_dir / "recall_at_k.png")


def write_screening(
    result: ScreeningResult,
    balanced: ScreeningResult,
    scores: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    out_dir: Path,
) -> dict[str, Any]:
    """Write ``screening.md`` (all structures and the balanced subset) and
    ``zero_shot_roc.png`` (the evaluated keywords' ``scores [N]``); returns the report's
    screening part."""
    (out_dir / "screening.md").write_text(plots.screening_table(result, balanced))
    evaluated = {name: scores[name] for name in result.per_keyword}
    plots.roc_curves(evaluated, labels, out_dir / "zero_shot_roc.png")
    return {"all": result._asdict(), "balanced": balanced._asdict()}


def write_metrics_json(report: Mapping[str, Any], out_dir: Path) -> Path:
    """Write the whole report as ``metrics.json``; returns its path."""
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(report, indent=1))
    return path
