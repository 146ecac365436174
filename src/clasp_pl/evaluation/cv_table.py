"""The k-fold table of ``clasp cv``: each row's metrics as mean ± std over the test folds.

A fold's report is the ``metrics.json`` of ``clasp eval`` on its test split
(:mod:`clasp_pl.evaluation.evaluate`). Rows:

- the baselines of the main run's reports (lexical, hybrid, untrained, random), under names
  that do not change between folds (the hybrid's α is chosen per fold, on its val split);
- every trained row (the main model, and each ``--row NAME=...`` model trained per fold): the
  learned model's row of that row's reports, named after it.

The std is the sample standard deviation over folds (``ddof=1``; none with one fold). A run of
some folds only (``clasp cv --only-folds``) records which (:attr:`CVTable.fold_ids`);
:func:`restrict` cuts a full run's table to those folds so that the two can be merged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clasp_pl.evaluation.plots import DIRECTIONS

LEARNED_ROW = "CLaSP (this checkpoint)"
"""The learned model's row in a ``clasp eval`` report."""
HYBRID_ROW = "hybrid: CLaSP + α x lexical (α from each fold's val)"
TABLE_KEYS = ("pair_R@1", "pair_R@5", "pair_R@10", "group_R@1", "group_R@5", "group_R@10")
"""The columns of ``cv.md`` (each direction's)."""


@dataclass(frozen=True)
class FoldStat:
    """A metric over folds: ``mean``, sample ``std`` and the ``per_fold`` values."""

    mean: float
    std: float
    per_fold: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> FoldStat:
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        return cls(float(array.mean()), std, [float(v) for v in array])

    def cell(self) -> str:
        """``mean ± std``; one fold has no spread to show (its report has bootstrap intervals)."""
        if len(self.per_fold) == 1:
            return f"{self.mean:.3f} (1 fold)"
        return f"{self.mean:.3f} ± {self.std:.3f}"

    def of_folds(self, positions: Sequence[int]) -> FoldStat:
        """The statistic over the folds at ``positions`` of :attr:`per_fold` only."""
        return FoldStat.of([self.per_fold[i] for i in positions])


@dataclass
class CVTable:
    """The k-fold results of one ``clasp cv`` run.

    Attributes:
        folds: K.
        rows: row name -> metric key (``t2s_pair_R@10``...) -> its statistics over folds.
        trained: the rows trained per fold, with the ``clasp fit`` arguments and the mean fit
            time per fold in seconds: name -> ``{"fit_args": [...], "fit_seconds": s}``.
        pairs_per_fold: test pairs of each fold.
        pair_ceiling: ``pair_R@k`` -> the pair Recall@k ceiling over folds.
        descriptions: description-query method -> ``mean_ap`` / ``mean_recall_at_10`` over folds.
        screening: trained row -> pooled keyword screening (:func:`screening_summary`).
        fold_ids: the folds tested (``0..K-1``, or the ones of ``--only-folds``), in the order of
            every ``per_fold`` list and of ``pairs_per_fold``.
    """

    folds: int
    rows: dict[str, dict[str, FoldStat]]
    trained: dict[str, dict[str, Any]]
    pairs_per_fold: list[int]
    pair_ceiling: dict[str, FoldStat] = field(default_factory=dict)
    descriptions: dict[str, dict[str, FoldStat]] = field(default_factory=dict)
    screening: dict[str, dict[str, Any]] = field(default_factory=dict)
    fold_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.fold_ids:
            self.fold_ids = list(range(self.folds))

    @property
    def all_folds(self) -> bool:
        """Whether every fold was tested (each pair once)."""
        return self.fold_ids == list(range(self.folds))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> CVTable:
        data = json.loads(Path(path).read_text())
        stats = {
            key: {row: {k: FoldStat(**v) for k, v in m.items()} for row, m in data[key].items()}
            for key in ("rows", "descriptions")
        }
        ceiling = {k: FoldStat(**v) for k, v in data["pair_ceiling"].items()}
        return cls(
            data["folds"],
            stats["rows"],
            data["trained"],
            data["pairs_per_fold"],
            ceiling,
            stats["descriptions"],
            data["screening"],
            data.get("fold_ids", []),
        )


def stable_row_name(name: str) -> str:
    """A report row's name across folds: the hybrid's per-fold α left out."""
    return HYBRID_ROW if name.startswith("hybrid:") else name


def aggregate(
    main_reports: Sequence[Mapping[str, Any]],
    trained_reports: Mapping[str, Sequence[Mapping[str, Any]]],
    trained: Mapping[str, Mapping[str, Any]],
    folds: int | None = None,
    fold_ids: Sequence[int] | None = None,
) -> CVTable:
    """The :class:`CVTable` of the fold reports (``metrics.json`` contents).

    Args:
        main_reports: the main run's report of each fold (its baselines are the table's).
        trained_reports: trained row name -> its report of each fold (the main run included).
        trained: trained row name -> ``{"fit_args", "fit_seconds"}``.
        folds: K (default: one report per fold, ``len(main_reports)``).
        fold_ids: which fold each report is of (default ``0..len(main_reports)-1``).
    """
    per_row: dict[str, list[Mapping[str, float]]] = {}
    for name, reports in trained_reports.items():
        per_row[name] = [r["methods"][LEARNED_ROW] for r in reports]
    for report in main_reports:
        for name, metrics in report["methods"].items():
            if name != LEARNED_ROW:
                per_row.setdefault(stable_row_name(name), []).append(metrics)
    rows = {name: _stats(metrics) for name, metrics in per_row.items()}
    ceiling = _stats([r["pair_ceiling"] for r in main_reports])
    described: dict[str, list[Mapping[str, float]]] = {}
    for report in main_reports:
        for name, scores in report["description_queries"]["rows"].items():
            described.setdefault(name, []).append(scores)
    return CVTable(
        len(main_reports) if folds is None else folds,
        rows,
        {name: dict(info) for name, info in trained.items()},
        [int(r["n_pairs"]) for r in main_reports],
        ceiling,
        {name: _stats(values) for name, values in described.items()},
        fold_ids=list(range(len(main_reports)) if fold_ids is None else fold_ids),
    )


def _stats(per_fold: Sequence[Mapping[str, float]]) -> dict[str, FoldStat]:
    """key -> :class:`FoldStat` of the keys every fold has (NaN-free ones)."""
    keys = [k for k in per_fold[0] if all(k in m and m[k] is not None for m in per_fold)]
    return {k: FoldStat.of([m[k] for m in per_fold]) for k in keys}


def restrict(table: CVTable, fold_ids: Sequence[int]) -> CVTable:
    """``table`` over the folds ``fold_ids`` only (each one it has). The pooled keyword screening
    is over all of the run's folds, so it is kept only when the folds are the run's own.

    Raises:
        ValueError: a fold the run did not test.
    """
    missing = sorted(set(fold_ids) - set(table.fold_ids))
    if missing:
        raise ValueError(f"folds {missing} are not in this run (it has {table.fold_ids})")
    positions = [table.fold_ids.index(f) for f in fold_ids]

    def cut(stats: Mapping[str, Mapping[str, FoldStat]]) -> dict[str, dict[str, FoldStat]]:
        return {n: {k: s.of_folds(positions) for k, s in m.items()} for n, m in stats.items()}

    same = list(fold_ids) == table.fold_ids
    return CVTable(
        table.folds,
        cut(table.rows),
        table.trained,
        [table.pairs_per_fold[i] for i in positions],
        {k: s.of_folds(positions) for k, s in table.pair_ceiling.items()},
        cut(table.descriptions),
        dict(table.screening) if same else {},
        list(fold_ids),
    )


def merge(tables: Sequence[tuple[str, CVTable]]) -> CVTable:
    """One table of several runs (e.g. one per ablation): the first run whole, and the trained
    rows of each other run, its main model named by its label (``label: row`` for its extra
    rows). Runs of other folds (their number, which ones, their test pairs) are refused."""
    (first_label, first), *others = tables
    merged = CVTable(
        first.folds,
        dict(first.rows),
        dict(first.trained),
        first.pairs_per_fold,
        first.pair_ceiling,
        first.descriptions,
        dict(first.screening),
        first.fold_ids,
    )
    for label, table in others:
        if (table.folds, table.fold_ids, table.pairs_per_fold) != (
            first.folds,
            first.fold_ids,
            first.pairs_per_fold,
        ):
            raise ValueError(
                f"{label}: folds {table.fold_ids} of {table.folds} ({table.pairs_per_fold} "
                f"pairs), not the folds {first.fold_ids} of {first.folds} "
                f"({first.pairs_per_fold} pairs) of {first_label}"
            )
        for index, name in enumerate(table.trained):
            new_name = label if index == 0 else f"{label}: {name}"
            merged.rows[new_name] = table.rows[name]
            merged.trained[new_name] = table.trained[name]
            if name in table.screening:
                merged.screening[new_name] = table.screening[name]
    return merged


def markdown(table: CVTable, keys: Sequence[str] = TABLE_KEYS) -> str:
    """``cv.md``: both directions' rows (mean ± std), the training budget of each trained row,
    the pair ceiling, the description queries and the pooled keyword screening."""
    if table.all_folds:
        head = (
            f"{table.folds}-fold cross-validation by paper: test pairs per fold "
            f"{table.pairs_per_fold} (every pair tested once); mean ± std (ddof=1) over folds."
        )
    else:
        head = (
            f"Folds {', '.join(map(str, table.fold_ids))} of a {table.folds}-fold "
            f"cross-validation by paper (not every pair is tested): test pairs per fold "
            f"{table.pairs_per_fold}; mean ± std (ddof=1) over these folds."
        )
    lines = [head, ""]
    for direction, label in DIRECTIONS.items():
        lines += [f"**{label}**", "", "| method | " + " | ".join(keys) + " |"]
        lines.append("|---|" + "---|" * len(keys))
        for name, stats in table.rows.items():
            cells = [
                stats[f"{direction}_{k}"].cell() if f"{direction}_{k}" in stats else "–"
                for k in keys
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Training budget of the trained rows** (per fold)", ""]
    lines += ["| row | clasp fit arguments | fit seconds / fold |", "|---|---|---|"]
    for name, info in table.trained.items():
        lines.append(f"| {name} | `{' '.join(info['fit_args'])}` | {info['fit_seconds']:.0f} |")
    if table.pair_ceiling:
        ceiling = ", ".join(f"{k} {s.cell()}" for k, s in table.pair_ceiling.items())
        lines += ["", f"Pair Recall@k ceiling of the test folds (identical captions): {ceiling}."]
    if table.descriptions:
        lines += ["", "**Description queries** (crystal system × chemical class)", ""]
        lines += ["| method | mean AP | mean R@10 |", "|---|---|---|"]
        for name, stats in table.descriptions.items():
            lines.append(
                f"| {name} | {stats['mean_ap'].cell()} | {stats['mean_recall_at_10'].cell()} |"
            )
    if table.screening:
        lines += ["", "**Keyword screening**, out-of-fold scores pooled over all folds", ""]
        lines += [
            "| row | keywords scored | skipped | mean ROC-AUC [95% CI] | mean AP [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for name, s in table.screening.items():
            lines.append(
                f"| {name} | {len(s['scored'])} | {len(s['skipped'])} | "
                f"{s['mean_roc_auc']:.3f} [{s['roc_auc_interval'][0]:.3f}, "
                f"{s['roc_auc_interval'][1]:.3f}] | {s['mean_ap']:.3f} "
                f"[{s['ap_interval'][0]:.3f}, {s['ap_interval'][1]:.3f}] |"
            )
    return "\n".join([*lines, ""])
