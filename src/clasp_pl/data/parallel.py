"""One ordered process-pool ``map`` for ingestion, featurization caches and search embedding."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def parallel_map(
    function: Callable[[Any], T],
    items: list[Any],
    *,
    workers: int = 1,
    progress: bool = True,
    desc: str = "",
    unit: str = "cif",
) -> Iterator[T]:
    """``map`` over ``workers`` processes, in input order, with a tqdm progress bar.

    Runs in this process when ``workers <= 1`` or there is at most one item. Otherwise the
    workers are *spawned*, not forked: callers run it after torch, a tokenizer's thread pool or
    CUDA may already be initialised (the data module, ``clasp search`` after loading a model), and
    a forked child inherits their threads and locks in whatever state they were (deadlocks). The
    cost is a fresh interpreter per worker, once per call; ``function`` and the items must be
    picklable (a module-level function or a ``functools.partial`` of one).
    """
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield function(item)
                bar.update()
            return
        chunksize = max(1, min(64, len(items) // (workers * 8)))
        with get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(function, items, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
