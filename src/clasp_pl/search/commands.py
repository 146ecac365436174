"""``clasp embed`` (structures -> embedding index) and ``clasp search`` (queries -> ranked hits).

Usage::

    clasp embed --ckpt model.ckpt --input my_cifs/ --out my_index --workers 4
    clasp embed --ckpt model.ckpt --input structures.csv --out my_index
    clasp search --index my_index "layered perovskite oxide with Ba and Ti" --top-k 10
    clasp search --index my_index path/to/query.cif          # structure -> nearest structures
    clasp search --index my_index --queries queries.txt --out results.jsonl

``embed`` ingests a CIF folder (recursive) or a CSV/JSONL table with
:mod:`clasp_pl.data.ingest` into ``INDEX/records.jsonl.gz``; inputs that cannot be read or
featurized are listed with their reason in ``INDEX/rejects.jsonl`` and never stop the run.
``search`` loads the model once for any number of queries; a query that is the path of a CIF
file searches by structure. See :mod:`clasp_pl.search.hybrid` for the scoring.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch

from clasp_pl.api import (
    embed_graphs,
    graph_config,
    load_model,
)
from clasp_pl.checkpoints import CheckpointError
from clasp_pl.data.graphs import CrystalGraph, GraphConfig, structure_to_graph
from clasp_pl.data.ingest import (
    IngestOptions,
    ingest_folder,
    ingest_table,
    parallel_map,
)
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.data.rejects import Reject
from clasp_pl.search.alpha_store import load_alpha
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex, describe_model, write_index
from clasp_pl.search.meta import record_meta
from clasp_pl.search.queries import embed_queries, result_rows

RECORDS = "records.jsonl.gz"
REJECTS = "rejects.jsonl"
TITLE_WIDTH = 48


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------- embed
def build_embed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clasp embed", description="Embed structures into a searchable index."
    )
    parser.add_argument("--ckpt", required=True, help="trained CLaSP checkpoint")
    parser.add_argument("--input", required=True, help="CIF folder or CSV/JSONL table")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument("--workers", type=int, default=1, help="processes for reading CIFs")
    parser.add_argument(
        "--require-text", action="store_true", help="reject structures without title or abstract"
    )
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default=_default_device())
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def featurize_record(line: str, config: GraphConfig) -> tuple[CrystalGraph, dict] | Reject:
    """Graph and meta line of one records-file line; a failure becomes a reject."""
    record = CrystalRecord.from_json(line)
    try:
        structure = record.to_structure()
        return structure_to_graph(structure, config), record_meta(record, structure)
    except Exception as error:  # noqa: BLE001 - one bad structure must not stop the index
        return Reject(record.source, record.id, "featurization_failed", str(error))


def embed_main(argv: list[str] | None = None) -> int:
    """``clasp embed``: ingest, featurize and embed structures into an index folder."""
    args = build_embed_parser().parse_args(argv)
    if not Path(args.input).exists():
        print(f"error: no such folder or table: {args.input}", file=sys.stderr)
        return 2
    if not Path(args.ckpt).is_file():
        print(f"error: no such checkpoint: {args.ckpt}", file=sys.stderr)
        return 2
    try:  # before the ingest: a bad checkpoint fails fast
        model = load_model(args.ckpt, args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    ingest = ingest_folder if Path(args.input).is_dir() else ingest_table
    summary = ingest(
        args.input,
        out / RECORDS,
        rejects=out / REJECTS,
        options=IngestOptions(require_text=args.require_text),
        workers=args.workers,
        progress=args.progress,
    )
    results = parallel_map(
        partial(featurize_record, config=graph_config(model)),
        list(iter_record_lines(out / RECORDS)),
        workers=args.workers,
        progress=args.progress,
        desc="embed",
    )
    meta: list[dict] = []
    failed: list[Reject] = []

    def graphs() -> Iterator[CrystalGraph]:
        for result in results:
            if isinstance(result, Reject):
                failed.append(result)
            else:
                meta.append(result[1])
                yield result[0]

    embeddings = embed_graphs(model, graphs(), args.batch_size)
    with open(out / REJECTS, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in failed)
    write_index(out, embeddings, meta, describe_model(args.ckpt, model), args.dtype)
    reasons = Counter(summary["rejected"]) + Counter(r.reason for r in failed)
    print(f"indexed {len(meta)} of {summary['total']} structures → {out}")
    print(f"rejected {sum(reasons.values())} → {out / REJECTS}")
    for reason, count in sorted(reasons.items()):
        print(f"  {reason}: {count}")
    return 0 if meta else 1


# ---------------------------------------------------------------------------------- search
def build_search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clasp search", description="Search an index with text or a CIF file."
    )
    parser.add_argument("query", nargs="?", help="free-text query, or the path of a CIF file")
    parser.add_argument("--index", required=True, help="index folder (clasp embed)")
    parser.add_argument("--ckpt", help="checkpoint (default: the one recorded in index.json)")
    parser.add_argument("--queries", help="file of queries: lines, or CSV/JSONL with `query`")
    parser.add_argument("--out", help="with --queries: results file (.jsonl, or .csv)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-hybrid", action="store_true", help="learned similarity only")
    parser.add_argument("--alpha", type=float, help="lexical weight (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=_default_device())
    return parser


def read_queries(path: str | Path) -> list[str]:
    """Queries of a file: a CSV or JSONL with a ``query`` column, else one per non-empty line."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            return [row["query"] for row in csv.DictReader(handle)]
        if path.suffix.lower() in (".jsonl", ".json"):
            return [json.loads(line)["query"] for line in handle if line.strip()]
        return [line.strip() for line in handle if line.strip()]


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


def search_main(argv: list[str] | None = None) -> int:
    """``clasp search``: rank an index's structures for one query or a file of queries."""
    parser = build_search_parser()
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
    try:
        model = load_model(ckpt, args.device)
        alpha, alpha_source = resolve_alpha(args, ckpt)
        query_emb, texts = embed_queries(model, queries, args.batch_size)
    except (CheckpointError, ValueError) as error:  # a bad checkpoint, an unreadable query CIF
        print(f"error: {error}", file=sys.stderr)
        return 2
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
        print(f"{len(results)} queries; alpha {alpha:g}: {alpha_source}", file=sys.stderr)
    elif args.json:
        print(json.dumps({**results[0], "alpha": alpha, "alpha_source": alpha_source}, indent=2))
    else:
        if texts[0] is None:
            print("structure query: score = cosine similarity of the crystal embeddings")
        else:
            print(f"alpha {alpha:g}: {alpha_source}; score = cosine + alpha * lexical")
        print(hits_table(results[0]["query"], results[0]["hits"]))
    return 0
