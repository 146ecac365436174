"""Benchmark: batch text search, queries per second after the model is loaded.

A :class:`~clasp_pl.models.clasp.CLaSPModule` with the default configuration (the pretrained
MiniLM text tower, random projection heads; no checkpoint needed) embeds ``--queries`` short text
queries, which are searched against ``--index-size`` random L2-normalised structure embeddings
written as a real float16 index folder (memory-mapped, converted chunk by chunk). Reported:
model load, text embedding, learned search, hybrid search (lexical index built once per index,
reported apart) and the end-to-end queries/s of embed + search. Timings are the best of
``--repeats`` runs after one warm-up.

Usage: ``python bench/bench_search.py [--queries 1000] [--index-size 10000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable

import torch
from tables import emit_table

from clasp_pl.api import embed_dim, embed_texts
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex, write_index

FORMULAS = ["BaTiO3", "Fe2O3", "LiCoO2", "MgSiO3", "ZnS", "TiO2", "NaCl", "CaCO3", "SrTiO3", "GaN"]
WORDS = ["layered", "perovskite", "high pressure", "spinel", "thin film", "garnet", "olivine"]
NOUNS = ["oxide", "structure", "phase transition", "single crystal", "mineral", "superconductor"]


def make_queries(n: int) -> list[str]:
    """``n`` short, distinct-ish text queries such as ``"layered LiCoO2 oxide"``."""
    combos = itertools.cycle(itertools.product(WORDS, FORMULAS, NOUNS))
    return [f"{w} {f} {noun} {i}" for i, (w, f, noun) in zip(range(n), combos, strict=False)]


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def run(n_queries: int, index_size: int, top_k: int, repeats: int) -> list[tuple[str, float]]:
    """``(stage, seconds)`` rows of the benchmark."""
    start = time.perf_counter()
    model = CLaSPModule().eval()
    load = time.perf_counter() - start
    queries = make_queries(n_queries)
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(index_size, embed_dim(model), generator=generator)
    meta = [{"id": str(i), "formula": FORMULAS[i % len(FORMULAS)]} for i in range(index_size)]
    with tempfile.TemporaryDirectory() as folder:
        write_index(folder, vectors, meta, {"checkpoint": "random"})
        index = EmbeddingIndex(folder)
        start = time.perf_counter()
        lexical = lexical_index(index.meta)
        build_lexical = time.perf_counter() - start
        query_emb = embed_texts(model, queries)
        embed = best_time(lambda: embed_texts(model, queries), repeats)
        search = best_time(lambda: index.search(query_emb, top_k), repeats)
        hybrid = best_time(
            lambda: hybrid_search(index, query_emb, queries, top_k, 0.1, lexical), repeats
        )
    return [
        ("model load (default config, not counted)", load),
        ("lexical index build (once per index, not counted)", build_lexical),
        (f"embed {n_queries} texts", embed),
        (f"learned search, top-{top_k}", search),
        (f"hybrid search, top-{top_k}", hybrid),
        ("end to end: embed + learned search", embed + search),
        ("end to end: embed + hybrid search", embed + hybrid),
    ]


def markdown(rows: list[tuple[str, float]], n_queries: int, index_size: int) -> str:
    """The rows as a Markdown table, with queries/s for the counted stages."""
    header = (
        f"### search: {n_queries} text queries vs {index_size:,} structures "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads)\n\n"
        "| stage | seconds | queries/s |\n|---|---:|---:|\n"
    )
    lines = [
        f"| {stage} | {seconds:.3f} | "
        + ("" if "not counted" in stage else f"{n_queries / seconds:,.0f}")
        + " |"
        for stage, seconds in rows
    ]
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--index-size", type=int, default=10_000)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    table = markdown(
        run(args.queries, args.index_size, args.top_k, args.repeats), args.queries, args.index_size
    )
    emit_table(table, args.out)


if __name__ == "__main__":
    main()
