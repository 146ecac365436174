"""``clasp embed``: structures (a CIF folder or a CSV/JSONL table) -> a searchable index.

Usage::

    clasp embed --ckpt model.ckpt --input my_cifs/ --out my_index --workers 4
    clasp embed --ckpt model.ckpt --input structures.csv --out my_index

See :mod:`clasp_pl.search.build`.
"""

from __future__ import annotations

from clasp_pl.api import default_device
from clasp_pl.commands.options import command_parser, default_of
from clasp_pl.search.build import EmbedOptions, build_index


def build_parser():
    parser = command_parser("clasp embed", "Embed structures into a searchable index.")
    parser.add_argument("--ckpt", required=True, help="trained CLaSP checkpoint")
    parser.add_argument("--input", required=True, help="CIF folder or CSV/JSONL table")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument(
        "--workers", type=int, default=default_of(EmbedOptions, "workers"), help="processes"
    )
    parser.add_argument(
        "--require-text", action="store_true", help="reject structures without title or abstract"
    )
    parser.add_argument(
        "--dtype", choices=("float16", "float32"), default=default_of(EmbedOptions, "dtype")
    )
    parser.add_argument("--batch-size", type=int, default=default_of(EmbedOptions, "batch_size"))
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=default_of(EmbedOptions, "max_atoms"),
        help="sites kept per structure (as in clasp data ingest)",
    )
    parser.add_argument("--device", default=default_device(), help="torch device")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp embed``; returns the exit status (1 when nothing could be indexed)."""
    args = build_parser().parse_args(argv)
    options = EmbedOptions(
        workers=args.workers,
        require_text=args.require_text,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=args.progress,
        max_atoms=args.max_atoms,
    )
    summary = build_index(args.ckpt, args.input, args.out, options, args.device)
    print(f"indexed {summary.indexed} of {summary.total} structures → {summary.out}")
    print(f"rejected {sum(summary.rejected.values())} → {summary.rejects}")
    for reason, count in summary.rejected.items():
        print(f"  {reason}: {count}")
    return 0 if summary.indexed else 1
