"""``clasp data`` sub-commands: ``ingest`` (CIF folder or table), ``build-default`` (AMCSD) and
``keywords`` (offline keyword captions).

Usage::

    python -m clasp_pl.data.commands ingest --cifs cod/cif --metadata meta.jsonl --out data/user/cod.jsonl.gz
    python -m clasp_pl.data.commands ingest --cifs COD/cif --cod-table cod_metadata.csv \
        --abstracts retrieved_abstract.csv --out data/user/cod.jsonl.gz
    python -m clasp_pl.data.commands ingest --table perov_5/val.csv --out data/user/perov_val.jsonl.gz
    python -m clasp_pl.data.commands build-default --db amcsd_cif1.db --out data/amcsd_default.jsonl.gz
    python -m clasp_pl.data.commands keywords --records data/amcsd_default.jsonl.gz \
        --out data/amcsd_default.keywords.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clasp_pl.data.amcsd import build_default
from clasp_pl.data.cif import DEFAULT_MAX_ATOMS
from clasp_pl.data.ingest import IngestOptions, ingest_folder, ingest_table
from clasp_pl.data.keywords import DEFAULT_MAX_KEYWORDS, keywords_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clasp data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="CIF folder or CSV/JSONL table → records")
    source = ingest.add_mutually_exclusive_group(required=True)
    source.add_argument("--cifs", help="folder of CIF files, walked recursively")
    source.add_argument("--table", help="CSV or JSONL table with a cif or path column")
    ingest.add_argument("--metadata", help="JSONL of title/abstract/keywords/year by id or doi")
    ingest.add_argument(
        "--cod-table", help="COD 'data' table CSV (file, title, doi...): --cifs is its mirror"
    )
    ingest.add_argument("--abstracts", help="CSV of DOI, File (COD id), Title, Abstract")
    ingest.add_argument("--out", required=True, help="records file (.jsonl.gz)")
    ingest.add_argument("--rejects", help="rejects JSONL (default: <out>.rejects.jsonl)")
    ingest.add_argument("--reader", choices=("gemmi", "pymatgen"), default="gemmi")
    ingest.add_argument("--occupancy", choices=("majority", "skip"), default="majority")
    text = ingest.add_mutually_exclusive_group()
    text.add_argument("--require-text", dest="require_text", action="store_true", default=None)
    text.add_argument("--no-require-text", dest="require_text", action="store_false")
    _common(ingest)

    default = commands.add_parser("build-default", help="AMCSD database → default records")
    default.add_argument("--db", help="amcsd_cif1.db (default: the installed larixite's)")
    default.add_argument("--out", default="data/amcsd_default.jsonl.gz")
    _common(default)

    keywords = commands.add_parser(
        "keywords", help="records → {id: [keywords]} JSON (offline YAKE stand-in for LLM keywords)"
    )
    keywords.add_argument("--records", required=True, help="records file (.jsonl.gz)")
    keywords.add_argument("--out", required=True, help="keywords JSON")
    keywords.add_argument("--max", dest="max_keywords", type=int, default=DEFAULT_MAX_KEYWORDS)
    keywords.add_argument(
        "--generic-terms", help="file of generic terms to drop, one per line (replaces the default)"
    )
    keywords.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-atoms", type=int, default=DEFAULT_MAX_ATOMS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv: list[str] | None = None) -> int:
    """Run a ``clasp data`` sub-command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "keywords":
        counts = keywords_command(
            args.records,
            args.out,
            max_keywords=args.max_keywords,
            generic_terms_file=args.generic_terms,
            progress=args.progress,
        )
        print(
            f"keywords for {counts['ids']} of {counts['records']} records "
            f"({counts['empty']} with none left) → {counts['out']}"
        )
        return 0
    if args.command == "build-default":
        try:
            summary = build_default(
                args.db,
                args.out,
                max_atoms=args.max_atoms,
                workers=args.workers,
                progress=args.progress,
            )
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.table and (args.metadata or args.cod_table or args.abstracts):
        print("error: --metadata, --cod-table and --abstracts go with --cifs", file=sys.stderr)
        return 2
    else:
        summary = _ingest(args)
    print(format_summary(summary))
    return 0


def _ingest(args: argparse.Namespace) -> dict[str, Any]:
    require_text = args.require_text if args.require_text is not None else bool(args.cifs)
    options = IngestOptions(
        reader=args.reader,
        occupancy=args.occupancy,
        max_atoms=args.max_atoms,
        require_text=require_text,
    )
    common = dict(
        rejects=args.rejects, options=options, workers=args.workers, progress=args.progress
    )
    if args.cifs:
        return ingest_folder(
            args.cifs,
            args.out,
            metadata=args.metadata,
            cod_table=args.cod_table,
            abstracts=args.abstracts,
            **common,
        )
    return ingest_table(args.table, args.out, **common)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable counts: kept, rejected per reason, and output paths."""
    lines = [f"kept {summary['kept']} of {summary['total']} → {summary['out']}"]
    if "papers" in summary:
        lines.append(f"papers (groups) {summary['papers']}, {summary['bytes'] / 1e6:.2f} MB")
        lines.append(f"sha256 {summary['sha256']}")
    rejected = summary["rejected"]
    lines.append(f"rejected {sum(rejected.values())} → {summary['rejects']}")
    lines += [f"  {reason}: {count}" for reason, count in rejected.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
