"""Bounds on one input's time and one worker's memory, so no single file stalls or sinks a run.

- **Time** (:func:`time_limit`): a POSIX interval timer (``setitimer(ITIMER_REAL)``) raises
  :class:`TimeLimitExceeded` inside the guarded block after ``seconds`` of wall time. It works in
  the main thread of a process (the ingest command itself with ``--workers 1``, and each worker of
  the :mod:`clasp_pl.data.parallel` pool, whose tasks run in the worker's main thread); elsewhere
  (another thread, Windows) the block runs unguarded. Python checks for the signal between
  bytecodes, so a single long call inside a C extension (one gemmi parse, one neighbour search)
  finishes before the limit fires: the cell-size cap of :mod:`clasp_pl.data.cif` keeps each of
  those calls short.
- **Memory** (:func:`limit_address_space`): ``RLIMIT_AS`` (virtual address space) of the calling
  process, set once to its current size plus an allowance. An allocation beyond it fails with
  ``MemoryError`` (numpy, gemmi), which the caller turns into a reject instead of the kernel's
  OOM killer taking the node. Ingestion applies it only inside pool worker processes, after
  their imports (never to the command's own process, which may hold other large mappings);
  address space grows at least as fast as resident memory, so the allowance bounds both. Linux
  only (``/proc/self/statm``); elsewhere no limit is set.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

try:
    import resource
except ImportError:  # Windows: no RLIMIT_AS
    resource = None  # type: ignore[assignment]


class TimeLimitExceeded(BaseException):
    """Raised inside a :func:`time_limit` block that ran past its limit.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that the ``except Exception`` with which
    readers turn library errors into rejects does not swallow it.
    """


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in the block after ``seconds`` (wall time).

    ``None`` or ``<= 0`` disables the limit. A timer already running outside (a nested limit) is
    restored afterwards, with the time spent inside subtracted.
    """
    if not seconds or seconds <= 0 or not _can_alarm():
        yield
        return

    def expire(signum, frame) -> None:
        raise TimeLimitExceeded(f"time limit of {seconds:g} s exceeded")

    previous_handler = signal.signal(signal.SIGALRM, expire)
    outer_remaining, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_remaining:
            elapsed = seconds - left
            signal.setitimer(signal.ITIMER_REAL, max(outer_remaining - elapsed, 1e-3))


def limit_address_space(extra_bytes: int | None) -> bool:
    """Let this process map at most ``extra_bytes`` more address space than it has now
    (``RLIMIT_AS`` soft limit = current size + ``extra_bytes``; a lower limit already set stays).

    Relative to the current size, so that the same setting works on any machine whatever the
    start-up size of a worker (shared libraries, thread stacks and buffers of numeric libraries
    vary with the number of cores).

    Returns:
        Whether a limit was applied (False for ``None``/``<= 0`` or where unsupported).
    """
    if (
        not extra_bytes
        or extra_bytes <= 0
        or resource is None
        or not hasattr(resource, "RLIMIT_AS")
    ):
        return False
    current = _address_space_bytes()
    if current is None:
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        return False
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return True


def _address_space_bytes() -> int | None:
    """This process's mapped address space in bytes (Linux ``/proc/self/statm``), else None."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()
