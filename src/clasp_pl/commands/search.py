"""``clasp search``: rank an index's structures for one query or a file of queries.

Usage::

    clasp search --index my_index "layered perovskite oxide with Ba and Ti" --top-k 10
    clasp search --index my_index path/to/query.cif          # structure -> nearest structures
    clasp search --index my_index --queries queries.txt --out results.jsonl

The model is loaded once for any number of queries; a query that is the path of a CIF file
searches by structure. See :mod:`clasp_pl.search.hybrid` for the scoring.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from clasp_pl.api import default_device, load_model
from clasp_pl.commands.options import command_parser
from clasp_pl.errors import UserError
from clasp_pl.search.alpha_store import load_alpha
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex
from clasp_pl.search.queries import (
    DEFAULT_TOP_K,
    QUERY_BATCH_SIZE,
    embed_queries,
    read_queries,
    result_rows,
)

TITLE_WIDTH = 48


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("clasp search", "Search an index with text or a CIF file.")
    parser.add_argument("query", nargs="?", help="free-text query, or the path of a CIF file")
    parser.add_argument("--index", required=True, help="index folder (clasp embed)")
    parser.add_argument("--ckpt", help="checkpoint (default: the one recorded in index.json)")
    parser.add_argument("--queries", help="file of queries: lines, or CSV/JSONL with `query`")
    parser.add_argument("--out", help="with --queries: results file (.jsonl, or .csv)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="hits per query")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-hybrid", action="store_true", help="learned similarity only")
    parser.add_argument("--alpha", type=float, help="lexical weight (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=QUERY_BATCH_SIZE)
    parser.add_argument("--device", default=default_device(), help="torch device")
    return parser


def resolve_alpha(args: argparse.Namespace, ckpt: str) -> tuple[float, str]:
    """``(alpha, why)`` from ``--no-hybrid``, ``--alpha`` or the model's stored value."""
    if args.no_hybrid:
        return 0.0, "hybrid off (--no-hybrid)"
    if args.alpha is not None:
        return args.alpha, "--alpha"
    return load_alpha(ckpt)


def hits_table(query: str, hits: list[dict[str, Any]]) -> str:
    """A fixed-width ranked table of one query's hits."""
    lines = [f"query: {query}"]
    header = f"{'rank':>4}  {'score':>7}  {'id':<12} {'formula':<14} {'space group':<12} "
    lines.append(header + f"{'title':<{TITLE_WIDTH}}  scored by")
    for hit in hits:
        title = hit["title"] if len(hit["title"]) <= TITLE_WIDTH else hit["title"][:45] + "..."
        lines.append(
            f"{hit['rank']:>4}  {hit['score']:>7.4f}  {hit['id']:<12} {hit['formula']:<14} "
            f"{hit['spacegroup']:<12} {title:<{TITLE_WIDTH}}  {', '.join(hit['parts'])}"
        )
    return "\n".join(lines)


def write_results(path: str | Path | None, results: list[dict[str, Any]]) -> None:
    """Batch results: JSONL (one line per query; stdout when no path) or CSV (one row per hit)."""
    if path is not None and Path(path).suffix.lower() == ".csv":
        rows = [
            {"query": result["query"], **hit, "parts": "; ".join(hit["parts"])}
            for result in results
            for hit in result["hits"]
        ]
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]) if rows else ["query"])
            writer.writeheader()
            writer.writerows(rows)
        return
    lines = [json.dumps(result, ensure_ascii=False) + "\n" for result in results]
    if path is None:
        sys.stdout.writelines(lines)
    else:
        Path(path).write_text("".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp search``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.query is None) == (args.queries is None):
        parser.error("give either one query or --queries FILE")
    if args.out and not args.queries:
        parser.error("--out writes the results of --queries FILE; a single query prints them")
    if args.json and args.queries:
        parser.error("--json is for a single query; --queries writes JSONL (or CSV with --out)")
    index = EmbeddingIndex(args.index, args.device)
    ckpt = args.ckpt or index.info["checkpoint"]
    queries = read_queries(args.queries) if args.queries else [args.query]
    model = load_model(ckpt, args.device)
    alpha, alpha_source = resolve_alpha(args, ckpt)
    try:
        query_emb, texts = embed_queries(model, queries, args.batch_size)
    except ValueError as error:  # an unreadable query CIF
        raise UserError(
            args.queries or args.query, str(error), "check the CIF file, or quote a text query"
        ) from error
    lexical = lexical_index(index.meta) if alpha > 0 and any(texts) else None
    hits = hybrid_search(index, query_emb, texts, args.top_k, alpha, lexical)
    results = [
        {"query": query, "kind": "text" if text else "structure", "hits": rows}
        for query, text, rows in zip(
            queries, texts, result_rows(index, texts, hits, alpha), strict=True
        )
    ]
    if args.queries:
        write_results(args.out, results)
        where = f"results → {args.out}" if args.out else "results on stdout"
        print(f"{len(results)} queries; alpha {alpha:g}: {alpha_source}; {where}", file=sys.stderr)
    elif args.json:
        print(json.dumps({**results[0], "alpha": alpha, "alpha_source": alpha_source}, indent=2))
    else:
        if texts[0] is None:
            print("structure query: score = cosine similarity of the crystal embeddings")
        else:
            print(f"alpha {alpha:g}: {alpha_source}; score = cosine + alpha * lexical")
        print(hits_table(results[0]["query"], results[0]["hits"]))
    return 0
