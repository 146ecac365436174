"""Run every benchmark and write ``bench/results.md`` (date, machine, commands, tables).

Usage: ``python bench/run_all.py [--quick]`` (``make bench``). Each benchmark runs in its own
process, one after the other, so their timings do not disturb each other.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
BENCHMARKS = [
    ("featurization", ["bench_featurize.py", "--n", "1000"], ["--n", "200"]),
    ("ingestion", ["bench_ingest.py"], ["--n", "500", "--repeat", "1", "--n-pymatgen", "50"]),
    ("training step (CPU)", ["bench_train_step.py", "--steps", "8"], ["--steps", "2"]),
    (
        "training step (GPU)",
        ["bench_train_step.py", "--device", "cuda"],
        ["--device", "cuda", "--steps", "2"],
    ),
    ("text tower step (CPU)", ["bench_text_tower.py"], ["--steps", "1", "--batch-size", "16"]),
    (
        "retrieval metrics",
        ["bench_metrics.py", "--n", "100000", "--dim", "256"],
        ["--n", "5000", "--small", "1000", "2000", "--query-subset", "500"],
    ),
    ("search throughput", ["bench_search.py"], ["--queries", "200", "--index-size", "2000"]),
    ("embedding map", ["bench_map.py", "--sizes", "8505", "100000"], ["--sizes", "2000"]),
    ("search page (HTTP API)", ["bench_serve.py", "--queries", "200"], ["--queries", "20"]),
]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--out", default=str(BENCH / "results.md"))
    args = parser.parse_args()
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(
        f"# Benchmarks\n\n{datetime.datetime.now():%Y-%m-%d %H:%M} on {machine()}.\n"
        "Ratios are measured side by side in one run. Regenerate with `make bench`.\n\n"
    )
    for title, command, quick in BENCHMARKS:
        argv = [sys.executable, str(BENCH / command[0]), *(quick if args.quick else command[1:])]
        with tmp.open("a") as handle:
            handle.write(
                f"## {title}\n\n`{' '.join(['python', 'bench/' + command[0], *argv[2:]])}`\n\n"
            )
        print(f"== {title}", flush=True)
        result = subprocess.run([*argv, "--out", str(tmp)], capture_output=True, text=True)
        print(result.stdout[-3000:])
        if result.returncode:
            print(result.stderr[-3000:], file=sys.stderr)
            with tmp.open("a") as handle:
                handle.write(f"failed (exit {result.returncode})\n\n")
        if "skipped" in result.stdout and "--device" in command:
            with tmp.open("a") as handle:
                handle.write(result.stdout.strip() + "\n\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
