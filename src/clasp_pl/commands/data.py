"""``clasp data`` sub-commands: ``ingest`` (CIF folder or table), ``build-default`` (AMCSD) and
``keywords`` (offline keyword captions).

Usage::

    clasp data ingest --cifs cod/cif --metadata meta.jsonl --out data/user/cod.jsonl.gz
    clasp data ingest --cifs COD/cif --cod-table cod_metadata.csv \
        --abstracts retrieved_abstract.csv --out data/user/cod.jsonl.gz
    clasp data ingest --table perov_5/val.csv --out data/user/perov_val.jsonl.gz
    clasp data ingest --cifs COD/cif --out data/user/cod.jsonl.gz \
        --workers 16 --max-atoms 1000      # killed? the same command resumes after its last shard
    clasp data build-default --db amcsd_cif1.db --out data/amcsd_default.jsonl.gz
    clasp data keywords --records data/amcsd_default.jsonl.gz \
        --out data/amcsd_default.keywords.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clasp_pl.commands.options import DefaultsHelpFormatter, command_parser, default_of
from clasp_pl.data.amcsd import build_default
from clasp_pl.data.cif import CELL_ATOM_FACTOR
from clasp_pl.data.cif_sites import OCCUPANCY_POLICIES
from clasp_pl.data.ingest import IngestOptions, ingest_folder, ingest_table
from clasp_pl.data.keywords import DEFAULT_MAX_KEYWORDS, keywords_command
from clasp_pl.data.shards import DEFAULT_SHARD_SIZE

DEFAULT_BUILD_OUT = "data/amcsd_default.jsonl.gz"
"""``build-default --out``: in a checkout, a symlink to the packaged default records."""


def output_path(out: str) -> Path:
    """Where a records file named ``out`` is written: a symlink is followed to its target, so
    writing the file (and its ``.rejects.jsonl``/``.sha256`` siblings, which sit beside the
    target) updates what the link points at and never replaces the link by a file."""
    return Path(out).resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("clasp data", __doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    subcommand = {"formatter_class": DefaultsHelpFormatter}

    ingest = commands.add_parser(
        "ingest", help="CIF folder or CSV/JSONL table → records", **subcommand
    )
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
    ingest.add_argument(
        "--reader", choices=("gemmi", "pymatgen"), default=default_of(IngestOptions, "reader")
    )
    text = ingest.add_mutually_exclusive_group()
    text.add_argument("--require-text", dest="require_text", action="store_true", default=None)
    text.add_argument("--no-require-text", dest="require_text", action="store_false")
    ingest.add_argument(
        "--time-limit",
        type=float,
        default=default_of(IngestOptions, "time_limit"),
        help="seconds per file before it is rejected as 'timeout' (0: no limit)",
    )
    ingest.add_argument(
        "--worker-memory-gb",
        type=float,
        default=default_of(IngestOptions, "worker_memory_gb"),
        help="address space each worker process may add after its start-up, with --workers > 1;"
        " a file that needs more is rejected as 'out_of_memory' (0: no limit)",
    )
    ingest.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help="inputs per output shard; an interrupted run resumes after its last shard",
    )
    _common(ingest)

    default = commands.add_parser(
        "build-default", help="AMCSD database → default records", **subcommand
    )
    default.add_argument("--db", help="amcsd_cif1.db (default: the installed larixite's)")
    default.add_argument(
        "--out",
        default=DEFAULT_BUILD_OUT,
        help="records file; a symlink is written through (its target is updated)",
    )
    _common(default)

    keywords = commands.add_parser(
        "keywords",
        help="records → {id: [keywords]} JSON (offline YAKE stand-in for LLM keywords)",
        **subcommand,
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
    parser.add_argument(
        "--occupancy",
        choices=OCCUPANCY_POLICIES,
        default=default_of(IngestOptions, "occupancy"),
        help="disordered sites: keep every element and occupancy (mixed), take the majority "
        "element (majority) or reject the structure (skip)",
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=default_of(IngestOptions, "max_atoms"),
        help="sites kept (a larger conventional cell is replaced by its primitive cell)",
    )
    parser.add_argument(
        "--max-cell-atoms",
        type=int,
        default=default_of(IngestOptions, "max_cell_atoms"),
        help=f"atoms of the conventional cell, counted before merging (default "
        f"{CELL_ATOM_FACTOR} × --max-atoms)",
    )
    parser.add_argument(
        "--no-formula-check",
        dest="check_formula",
        action="store_false",
        help="keep structures that disagree with their stated formula",
    )
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
                output_path(args.out),
                max_atoms=args.max_atoms,
                max_cell_atoms=args.max_cell_atoms,
                occupancy=args.occupancy,
                check_formula=args.check_formula,
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
        max_cell_atoms=args.max_cell_atoms,
        check_formula=args.check_formula,
        require_text=require_text,
        time_limit=args.time_limit,
        worker_memory_gb=args.worker_memory_gb,
    )
    common = dict(
        rejects=args.rejects,
        options=options,
        workers=args.workers,
        progress=args.progress,
        shard_size=args.shard_size,
    )
    if args.cifs:
        return ingest_folder(
            args.cifs,
            output_path(args.out),
            metadata=args.metadata,
            cod_table=args.cod_table,
            abstracts=args.abstracts,
            **common,
        )
    return ingest_table(args.table, output_path(args.out), **common)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable counts: kept, rejected per reason, and output paths."""
    lines = [f"kept {summary['kept']} of {summary['total']} → {summary['out']}"]
    if summary.get("resumed_shards"):
        lines.append(f"resumed after {summary['resumed_shards']} finished shards")
    if "papers" in summary:
        lines.append(f"papers (groups) {summary['papers']}, {summary['bytes'] / 1e6:.2f} MB")
        lines.append(f"sha256 {summary['sha256']}")
    rejected = summary["rejected"]
    lines.append(f"rejected {sum(rejected.values())} → {summary['rejects']}")
    lines += [f"  {reason}: {count}" for reason, count in rejected.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
