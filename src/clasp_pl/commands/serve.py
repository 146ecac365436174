"""``clasp serve``: a local search page over an index, or over the default dataset.

Usage::

    clasp serve --index my_index                      # http://127.0.0.1:8000
    clasp serve --ckpt runs/pretrain/checkpoints/best.ckpt --port 8080

The model is loaded once, before the server starts. It listens on 127.0.0.1 (this machine only)
unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import uvicorn

from clasp_pl.errors import UserError
from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS
from clasp_pl.serve.app import Limits, create_app
from clasp_pl.serve.engine import SearchEngine
from clasp_pl.viz.records_index import records_index


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clasp serve",
        description="Serve a search page and JSON API (/api/search?q=&k=) over an index.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="index folder (clasp embed)")
    source.add_argument("--ckpt", help="checkpoint: serve the --records file embedded with it")
    parser.add_argument("--records", default=DEFAULT_RECORDS, help="records file for --ckpt")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="where --ckpt's index goes")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--alpha", type=float, help="lexical weight (None: the model's stored one)")
    parser.add_argument(
        "--max-upload-kb", type=int, default=Limits.max_upload_bytes // 1024, help="largest CIF"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp serve`` until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    for option, path in (("--index", args.index), ("--ckpt", args.ckpt)):
        if path and not Path(path).exists():
            raise UserError(path, "no such file or folder", f"check the path of {option}")
    index = args.index or records_index(args.records, args.ckpt, args.cache_dir, args.device)
    ckpt = args.ckpt if args.index is None else None
    engine = SearchEngine(index, ckpt, args.device, args.alpha)
    app = create_app(engine, Limits(max_upload_bytes=args.max_upload_kb * 1024))
    print(f"serving {len(engine):,} structures of {index} at http://{args.host}:{args.port}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
