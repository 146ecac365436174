"""Crash-safe checkpoints: a crash or kill during a save leaves the previous file intact."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic: write ``<path>.<pid>.tmp``, fsync, rename.

    ``os.replace`` within one folder is atomic on POSIX filesystems, so readers (and a resumed run)
    see either the old complete checkpoint or the new complete one, never a truncated file. A
    temporary file orphaned by a killed writer is deleted by the next successful save of the same
    path (one writer per path is assumed: Lightning saves from global rank 0 only). Remote paths
    (``s3://`` etc.) fall back to the parent's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        for orphan in path.parent.glob(f"{glob.escape(path.name)}.*{TMP_SUFFIX}"):
            orphan.unlink(missing_ok=True)


def _is_local(path: str | Path) -> bool:
    return isinstance(get_filesystem(str(path)), LocalFileSystem)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every OS opens folders)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
