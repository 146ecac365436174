"""``clasp serve``: a local search page over an index, or over the default dataset.

Usage::

    clasp serve --index my_index                      # http://127.0.0.1:8000
    clasp serve --ckpt runs/pretrain/checkpoints/best.ckpt --port 8080

The model is loaded once, before the server starts. It listens on 127.0.0.1 (this machine only)
unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse

import uvicorn

from clasp_pl.commands.options import add_index_source, resolve_index
from clasp_pl.serve.app import Limits, create_app
from clasp_pl.serve.engine import SearchEngine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clasp serve",
        description="Serve a search page and JSON API (/api/search?q=&k=) over an index.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_index_source(parser, "serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--alpha", type=float, help="lexical weight (None: the model's stored one)")
    parser.add_argument(
        "--max-upload-kb", type=int, default=Limits.max_upload_bytes // 1024, help="largest CIF"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp serve`` until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    index = resolve_index(args)
    ckpt = args.ckpt if args.index is None else None
    engine = SearchEngine(index, ckpt, args.device, args.alpha)
    app = create_app(engine, Limits(max_upload_bytes=args.max_upload_kb * 1024))
    print(f"serving {len(engine):,} structures of {index} at http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
