"""Resumable ingestion output: results are written in shards with a manifest, then assembled.

While ``clasp data ingest`` runs, its results go to a folder beside the output file::

    <out>.parts/
        manifest.json              key of the run, shard size, counts of every finished shard
        00000.records.jsonl        record JSON lines of inputs 0 .. shard_size-1, in input order
        00000.rejects.jsonl        their rejects
        00001.records.jsonl ...

A shard's two files are written under temporary names, flushed to disk and renamed; the
manifest (also replaced atomically) lists a shard only after that, so a process killed at any
point (even ``SIGKILL``) leaves a consistent prefix of finished shards. A rerun with the same key
(the same inputs, options and metadata; see :func:`run_key`) skips the inputs of those shards
and goes on; a different key starts over. When every shard is done, the records file is written
from the shards (gzip without name or timestamp, so it is byte-identical to an uninterrupted
run), then the rejects file, both atomically, and the folder is removed.

The key covers the list of inputs (ids, paths, text fields), the options and the metadata, not
the bytes of the CIF files: after editing files in place, delete ``<out>.parts`` to start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from clasp_pl.data.records import CrystalRecord, write_record_lines
from clasp_pl.data.rejects import Reject

MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 1000
FORMAT = 1


def run_key(parts: Iterable[Any]) -> str:
    """SHA-256 of the JSON of ``parts`` (streamed: one part at a time)."""
    digest = hashlib.sha256(f"shards-{FORMAT}".encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """Counts of one finished shard: records kept and rejects per reason."""

    kept: int
    rejected: dict[str, int]

    @property
    def items(self) -> int:
        return self.kept + sum(self.rejected.values())


class ShardedOutput:
    """Shards of one ingestion run (see the module docstring).

    Args:
        out: the final records file (``.jsonl.gz``).
        rejects: the final rejects file (JSON Lines).
        key: identity of the run (:func:`run_key`); a folder with another key is wiped.
        shard_size: inputs per shard.
    """

    def __init__(self, out: str | Path, rejects: str | Path, key: str, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, not {shard_size}")
        self.out = Path(out)
        self.rejects = Path(rejects)
        self.folder = self.out.with_name(self.out.name + ".parts")
        self.key = key
        self.shard_size = shard_size
        self.shards = self._finished_shards()
        self.resumed = len(self.shards)

    @property
    def done_items(self) -> int:
        """Number of inputs whose results are already in finished shards."""
        return sum(shard.items for shard in self.shards)

    def write(self, results: Iterable[CrystalRecord | Reject]) -> None:
        """Write ``results`` of the inputs from :attr:`done_items` on, one shard at a time."""
        iterator = iter(results)
        while chunk := list(islice(iterator, self.shard_size)):
            self._write_shard(len(self.shards), chunk)

    def assemble(self) -> dict[str, Any]:
        """Write the records and rejects files from the shards, remove the folder, and return
        ``{"total", "kept", "rejected": {reason: count}, "out", "rejects", "resumed_shards"}``."""
        write_record_lines(self._lines("records"), self.out)
        self.rejects.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.rejects.with_name(self.rejects.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(self._lines("rejects"))
        os.replace(tmp, self.rejects)
        reasons: Counter[str] = Counter()
        for shard in self.shards:
            reasons.update(shard.rejected)
        kept = sum(shard.kept for shard in self.shards)
        shutil.rmtree(self.folder, ignore_errors=True)
        return {
            "total": kept + sum(reasons.values()),
            "kept": kept,
            "rejected": dict(sorted(reasons.items())),
            "out": str(self.out),
            "rejects": str(self.rejects),
            "resumed_shards": self.resumed,
        }

    def _path(self, index: int, kind: str) -> Path:
        return self.folder / f"{index:05d}.{kind}.jsonl"

    def _lines(self, kind: str) -> Iterator[str]:
        for index in range(len(self.shards)):
            with open(self._path(index, kind), encoding="utf-8") as handle:
                yield from handle

    def _finished_shards(self) -> list[ShardInfo]:
        """Shards of an earlier run with this key whose files exist; otherwise a fresh folder."""
        manifest = self.folder / MANIFEST
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") != self.key or saved.get("shard_size") != self.shard_size:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            return []
        shards = []
        for index, info in enumerate(saved.get("shards", [])):
            if not all(self._path(index, kind).is_file() for kind in ("records", "rejects")):
                break
            shards.append(ShardInfo(int(info["kept"]), dict(info["rejected"])))
        return shards

    def _write_shard(self, index: int, results: list[CrystalRecord | Reject]) -> None:
        kept = 0
        reasons: Counter[str] = Counter()
        records, rejects = [], []
        for result in results:
            if isinstance(result, Reject):
                reasons[result.reason] += 1
                rejects.append(result.to_json() + "\n")
            else:
                kept += 1
                records.append(result.to_json() + "\n")
        for kind, lines in (("records", records), ("rejects", rejects)):
            _write_atomic(self._path(index, kind), "".join(lines))
        self.shards.append(ShardInfo(kept, dict(sorted(reasons.items()))))
        manifest = {
            "format": FORMAT,
            "key": self.key,
            "shard_size": self.shard_size,
            "shards": [{"kept": s.kept, "rejected": s.rejected} for s in self.shards],
        }
        _write_atomic(self.folder / MANIFEST, json.dumps(manifest, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a flushed temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
