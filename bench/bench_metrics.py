"""Benchmark: chunked retrieval metrics vs the full-matrix argsort of open_clip.

For N random L2-normalised query/target embeddings (one direction, query i pairs with
target i), measures wall time and peak memory of

(a) ``clasp_pl.evaluation.metrics.retrieval_metrics`` (chunked; pair *and* group ranks);
(b) the approach of open_clip's ``get_clip_metrics``: ``logits = a @ b.T``,
    ``ranking = argsort(logits, descending)``, ``preds = where(ranking == ground_truth)``
    (pair ranks only).

Every measurement runs in a fresh subprocess; its peak memory is the growth of the process's
maximum resident set size (``resource.getrusage``) over the resident size just before the
timed call, so it excludes the interpreter and the input embeddings. (b) at N = 100k would
need ~40 GB for the logits alone, so it is measured at smaller N and extrapolated; (a) at
100k is timed on a subset of the queries and scaled linearly (every chunk of queries costs the
same; peak memory does not depend on the number of queries).

Usage: ``python bench/bench_metrics.py --n 100000 --dim 256 [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from clasp_pl.evaluation.metrics import retrieval_metrics, retrieval_ranks

GB = 1024**3


def random_embeddings(n: int, dim: int, seed: int) -> torch.Tensor:
    """``[n, dim]`` random unit vectors, generated block-wise to keep the peak RSS low."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for start in range(0, n, 8192):
        block = out[start : start + 8192]
        block.normal_(generator=generator)
        block.div_(block.norm(dim=1, keepdim=True))
    return out


def full_matrix_pair_ranks(query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[N]`` 1-based pair ranks the way open_clip's ``get_clip_metrics`` computes them."""
    logits = query @ target.T
    ground_truth = torch.arange(len(query)).view(-1, 1)
    ranking = torch.argsort(logits, descending=True)
    preds = torch.where(ranking == ground_truth)[1]
    return preds + 1


def _current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(method: str, n_queries: int, n_targets: int, dim: int, chunk_size: int) -> dict:
    """Time one call in this (fresh) process; returns seconds and extra peak bytes."""
    target = random_embeddings(n_targets, dim, seed=1)
    query = random_embeddings(n_targets, dim, seed=2)[:n_queries].clone()
    groups = torch.arange(n_targets) // 3  # papers of three structures
    calls: dict[str, Callable[[], object]] = {
        "chunked": lambda: retrieval_metrics(
            query,
            target,
            groups[:n_queries],
            groups,
            torch.arange(n_queries),
            chunk_size=chunk_size,
        ),
        "full_argsort": lambda: full_matrix_pair_ranks(query, target),
    }
    rss_before = _current_rss()
    start = time.perf_counter()
    calls[method]()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_bytes": max(_max_rss() - rss_before, 0)}


def measure(method: str, n_queries: int, n_targets: int, dim: int, chunk_size: int) -> dict:
    """Run :func:`worker` in a fresh Python process and parse its JSON line."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        str(n_queries),
        str(n_targets),
        "--dim",
        str(dim),
        "--chunk-size",
        str(chunk_size),
    ]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_agreement(n: int, dim: int) -> None:
    """The chunked pair ranks equal open_clip's on random data (no ties almost surely)."""
    query, target = random_embeddings(n, dim, seed=3), random_embeddings(n, dim, seed=4)
    groups = torch.arange(n)
    pair, _ = retrieval_ranks(query, target, groups, groups, torch.arange(n), chunk_size=97)
    assert torch.equal(pair, full_matrix_pair_ranks(query, target)), "ranks differ"


def run(args: argparse.Namespace) -> str:
    """All measurements; returns the Markdown report."""
    check_agreement(1000, args.dim)
    rows = [
        "| method | queries x targets | time (s) | peak extra memory (GiB) | note |",
        "|---|---|---|---|---|",
    ]
    ratios = ["| N | time full/chunked | memory full/chunked |", "|---|---|---|"]
    full = {}
    for n in args.small:
        chunked = measure("chunked", n, n, args.dim, args.chunk_size)
        full[n] = measure("full_argsort", n, n, args.dim, args.chunk_size)
        for name, m in (("(a) chunked", chunked), ("(b) full argsort", full[n])):
            rows.append(
                f"| {name} | {n:,} x {n:,} | {m['seconds']:.2f} | "
                f"{m['peak_bytes'] / GB:.3f} | measured |"
            )
        ratios.append(
            f"| {n:,} | {full[n]['seconds'] / chunked['seconds']:.1f} | "
            f"{full[n]['peak_bytes'] / max(chunked['peak_bytes'], 1):.1f} |"
        )
    n_sub = min(args.query_subset, args.n)
    big = measure("chunked", n_sub, args.n, args.dim, args.chunk_size)
    scale = args.n / n_sub
    rows.append(
        f"| (a) chunked | {n_sub:,} x {args.n:,} | {big['seconds']:.2f} | "
        f"{big['peak_bytes'] / GB:.3f} | measured (query subset) |"
    )
    rows.append(
        f"| (a) chunked | {args.n:,} x {args.n:,} | {big['seconds'] * scale:.1f} | "
        f"{big['peak_bytes'] / GB:.3f} | time x {scale:.2f} (linear in queries) |"
    )
    n_ref = max(args.small)
    growth = (args.n / n_ref) ** 2
    t_full = full[n_ref]["seconds"] * growth * math.log(args.n) / math.log(n_ref)
    mem_full = full[n_ref]["peak_bytes"] * growth
    rows.append(
        f"| (b) full argsort | {args.n:,} x {args.n:,} | {t_full:.0f} | "
        f"{mem_full / GB:.1f} | extrapolated from N={n_ref:,} |"
    )
    return "\n".join(
        [
            f"Retrieval-metric benchmark, dim={args.dim}, chunk_size={args.chunk_size}, "
            f"torch threads={torch.get_num_threads()}, one direction; (a) computes pair and group "
            "ranks, (b) pair ranks only. Pair ranks of (a) and (b) agree (checked at N=1,000).",
            "",
            *rows,
            "",
            "Ratios at equal N:",
            "",
            *ratios,
            "",
            f"Extrapolation of (b) from N0={n_ref:,}: time(N) = time(N0) * (N/N0)^2 * log N / log N0 "
            "(argsort of N rows of N), memory(N) = memory(N0) * (N/N0)^2. (a) memory is "
            "O(chunk_size * N), independent of the number of queries.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="N for the large measurement")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument(
        "--small",
        type=int,
        nargs="+",
        default=[5000, 10000, 20000],
        help="N values at which both methods are measured",
    )
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument(
        "--query-subset",
        type=int,
        default=4096,
        help="queries timed at the large N (time scaled to N queries)",
    )
    parser.add_argument("--out", help="also append the Markdown report to this file")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "NQ", "NT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, n_queries, n_targets = args.worker
        print(json.dumps(worker(method, int(n_queries), int(n_targets), args.dim, args.chunk_size)))
        return
    report = run(args)
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
