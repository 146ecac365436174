"""Real multi-process runs on loopback: a free port, and ranks spawned and joined with a timeout."""

from __future__ import annotations

import multiprocessing as mp
import socket
from collections.abc import Callable
from pathlib import Path

import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(
    target: Callable[[int, int, str], None], world_size: int, out_dir: Path, timeout_s: float
) -> list:
    """Spawn ``target(rank, port, out_dir)`` for each rank, join them, and load what each saved
    to ``out_dir/rank{r}.pt``. Fails (does not hang) when a rank outlives ``timeout_s`` or exits
    with an error."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, port, str(out_dir))) for r in range(world_size)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=timeout_s)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
        proc.join()
    assert not hung, f"ranks did not finish within {timeout_s} s"
    assert [proc.exitcode for proc in procs] == [0] * world_size, [p.exitcode for p in procs]
    return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(world_size)]
