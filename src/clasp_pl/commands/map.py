"""``clasp map``: an interactive embedding map of an index, or of the default dataset.

Usage::

    clasp map --index my_index --out map.html
    clasp map --index my_index --color-by "spinel" --queries "olivine" "layered perovskite"
    clasp map --ckpt runs/pretrain/checkpoints/best.ckpt          # the default AMCSD data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clasp_pl.commands.options import add_index_source, resolve_index
from clasp_pl.viz.colouring import FIELDS
from clasp_pl.viz.embedding_map import INDEX_CACHE, MapTimings, index_map
from clasp_pl.viz.projection import ProjectionConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clasp map",
        description="Write an interactive embedding map (one HTML file that opens offline).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_index_source(parser, "map")
    parser.add_argument("--out", default="embedding_map.html", help="HTML file to write")
    parser.add_argument(
        "--color-by",
        default="crystal_system",
        help=f"{' | '.join(FIELDS)}, or a free-text query whose score colours the points",
    )
    parser.add_argument("--queries", nargs="*", default=[], help="mark each query's top-k hits")
    parser.add_argument("--top-k", type=int, default=10, help="hits marked per query")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp map``; returns the exit status."""
    args = build_parser().parse_args(argv)
    index = resolve_index(args)
    timings = MapTimings()
    out = index_map(
        index,
        args.out,
        color_by=args.color_by,
        queries=args.queries,
        top_k=args.top_k,
        device=args.device,
        projection=ProjectionConfig(seed=args.seed),
        timings=timings,
    )
    print(
        f"wrote {out} (t-SNE {timings.projection:.1f} s, queries {timings.queries:.1f} s, "
        f"page {timings.html:.1f} s; coordinates cached in {Path(index) / INDEX_CACHE})"
    )
    return 0
