"""Benchmark: search-page latency through the HTTP API, p50/p95 over 200 queries.

``clasp serve`` runs in its own process on a free loopback port over the default AMCSD index
(8.5k structures; built once with the checkpoint and cached under ``data/cache``). Each of
``--queries`` distinct text queries (:func:`bench_search.make_queries`) is one
``GET /api/search?q=...&k=10`` request, sent one after another after 5 warm-up requests; the
latency is the client's wall time from request to parsed JSON (text embedding + hybrid search +
JSON). The checkpoint is ``--ckpt``, else ``runs/pretrain/checkpoints/last.ckpt``; when there is
none, the default model is trained for one epoch into ``runs/bench-serve`` first (a few minutes
on 2 CPU cores) and the table says so.

Usage: ``python bench/bench_serve.py [--ckpt CKPT] [--queries 200] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch
from bench_search import make_queries
from tables import emit_table

from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS
from clasp_pl.viz.records_index import records_index

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "runs" / "pretrain" / "checkpoints" / "last.ckpt"
QUICK = REPO / "runs" / "bench-serve" / "checkpoints" / "last.ckpt"
WARMUP = 5


def checkpoint(path: str | None) -> tuple[Path, str]:
    """``(checkpoint, how it was obtained)``; trains the quick one when nothing else exists."""
    if path:
        return Path(path), f"`{path}`"
    if TRAINED.is_file():
        return TRAINED, f"`{TRAINED.relative_to(REPO)}` (trained)"
    if not QUICK.is_file():
        configs = ["conf/trainer/cpu.yaml", "conf/data/amcsd.yaml", "conf/model/clasp.yaml"]
        subprocess.run(
            [sys.executable, "-m", "clasp_pl.cli", "fit"]
            + [arg for config in configs for arg in ("--config", config)]
            + ["--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "bench-serve"],
            cwd=REPO,
            check=True,
        )
    return QUICK, f"`{QUICK.relative_to(REPO)}` (default model trained 1 epoch by this benchmark)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as response:
        return json.load(response)


def wait_until_up(base: str, server: subprocess.Popen, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"clasp serve exited with {server.returncode}")
        try:
            return get_json(f"{base}/api/info")
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("clasp serve did not start")


def run(index: Path, n_queries: int, top_k: int) -> tuple[np.ndarray, dict, float]:
    """``([n_queries] latencies in s, /api/info, server start-up s)``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clasp_pl.cli", "serve", "--index", str(index)]
    start = time.perf_counter()
    server = subprocess.Popen([*command, "--port", str(port), "--device", "cpu"], cwd=REPO)
    try:
        info = wait_until_up(base, server)
        startup = time.perf_counter() - start
        queries = make_queries(WARMUP + n_queries)
        latencies = []
        for number, query in enumerate(queries):
            url = f"{base}/api/search?" + urllib.parse.urlencode({"q": query, "k": top_k})
            start = time.perf_counter()
            hits = get_json(url)["hits"]
            elapsed = time.perf_counter() - start
            assert len(hits) == top_k, hits
            if number >= WARMUP:
                latencies.append(elapsed)
    finally:
        server.terminate()
        server.wait(30)
    return np.array(latencies), info, startup


def markdown(latencies: np.ndarray, info: dict, startup: float, source: str, k: int) -> str:
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return (
        f"### clasp serve: {len(latencies)} text queries, top {k}, over the default index "
        f"({info['count']:,} structures; {os.cpu_count()} CPUs, torch {torch.__version__})\n\n"
        f"Checkpoint: {source}; alpha {info['alpha']} ({info['alpha_source']}).\n\n"
        "| server start (model + index load) s | p50 ms | p95 ms | mean ms | max ms |\n"
        "|---:|---:|---:|---:|---:|\n"
        f"| {startup:.1f} | {p50:.1f} | {p95:.1f} | {latencies.mean() * 1000:.1f} "
        f"| {latencies.max() * 1000:.1f} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint (default: see the module docstring)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    ckpt, source = checkpoint(args.ckpt)
    index = records_index(REPO / DEFAULT_RECORDS, ckpt, REPO / DEFAULT_CACHE_DIR)
    latencies, info, startup = run(index, args.queries, args.top_k)
    table = markdown(latencies, info, startup, source, args.top_k)
    emit_table(table, args.out)


if __name__ == "__main__":
    main()
