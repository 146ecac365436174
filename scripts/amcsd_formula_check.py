"""Does each AMCSD default record have the elements of the formula AMCSD states for its entry?

Counts records whose non-hydrogen element set differs from AMCSD's formula (``cif.formula`` in
larixite's ``amcsd_cif1.db``), for:

1. ``committed``: the records file as committed (``data/amcsd_default.jsonl.gz``, built with the
   ``majority`` policy and no formula check);
2. ``majority``: rebuilt here with the ``majority`` policy, no formula check;
3. ``mixed``: rebuilt here with the ``mixed`` policy, no formula check;
4. ``mixed + formula check``: the default build (target: 0 differences; the disagreeing entries
   are rejected as ``formula_mismatch``).

and the reject counts per reason of each rebuild. Nothing is written to ``data/``.

Usage::

    python scripts/amcsd_formula_check.py [--db amcsd_cif1.db] [--workers 2] [--out report.md]
"""

from __future__ import annotations

import argparse
import collections
import sys
from functools import partial
from pathlib import Path

from clasp_pl.data.amcsd import find_default_db, iter_rows, row_to_record
from clasp_pl.data.formula import parse_formula
from clasp_pl.data.parallel import parallel_map
from clasp_pl.data.records import CrystalRecord, iter_records

REPO = Path(__file__).resolve().parents[1]
BUILDS = {
    "majority": {"occupancy": "majority", "check_formula": False},
    "mixed": {"occupancy": "mixed", "check_formula": False},
    "mixed + formula check": {"occupancy": "mixed", "check_formula": True},
}


def non_h(elements) -> frozenset[str]:
    return frozenset(str(element) for element in elements if str(element) != "H")


def differing(records: list[CrystalRecord], formulas: dict[str, str]) -> list[str]:
    """Ids of records whose non-H element set is not that of their AMCSD formula."""
    out = []
    for record in records:
        stated = parse_formula(formulas.get(record.id, "")) or {}
        found = {element.symbol for element in record.composition.elements}
        if stated and non_h(stated) != non_h(found):
            out.append(record.id)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="amcsd_cif1.db (default: the installed larixite's)")
    parser.add_argument("--records", default=str(REPO / "data" / "amcsd_default.jsonl.gz"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", help="also write the Markdown report here")
    args = parser.parse_args()
    rows = list(iter_rows(Path(args.db) if args.db else find_default_db()))
    formulas = {f"amcsd-{row.id}": row.formula for row in rows}
    lines = [
        f"AMCSD entries: {len(rows):,}; records whose non-H element set differs from AMCSD's "
        "formula:",
        "",
        "| build | records | differ | rejected (reason: count) |",
        "|---|---|---|---|",
    ]
    committed = list(iter_records(args.records))
    lines.append(
        f"| committed {Path(args.records).name} | {len(committed):,} "
        f"| {len(differing(committed, formulas)):,} | (see its rejects file) |"
    )
    remaining: list[str] = []
    mismatches: list[str] = []
    for name, settings in BUILDS.items():
        convert = partial(row_to_record, **settings)
        results = list(parallel_map(convert, rows, workers=args.workers, progress=False))
        records = [result for result in results if isinstance(result, CrystalRecord)]
        reasons = collections.Counter(r.reason for r in results if not isinstance(r, CrystalRecord))
        ids = differing(records, formulas)
        lines.append(
            f"| {name} | {len(records):,} | {len(ids):,} "
            f"| {', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))} |"
        )
        if settings["check_formula"]:
            remaining = ids
            mismatches = [
                r.message for r in results if getattr(r, "reason", "") == "formula_mismatch"
            ]
    lines += [
        "",
        "Remaining differences after the formula check: " + (", ".join(remaining) or "none"),
    ]
    lines += ["", "formula_mismatch rejects:", *(f"- {message}" for message in mismatches)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
