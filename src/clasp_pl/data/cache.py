"""Sharded, memory-mappable, resumable array store for featurized items.

A store is a folder::

    manifest.json          key (what was computed and how), source fingerprint, shard list
    shard-00000/           one folder per shard, renamed into place only when complete
        <field>.npy        all items' values of one field, concatenated along axis 0
        <field>.ptr.npy    [n_items + 1] int64 offsets: item i is values[ptr[i]:ptr[i+1]]

Every field is ragged (items may have different lengths along axis 0), which covers per-atom,
per-edge and per-token arrays as well as fixed-size rows (length 1 per item). Loading memory-maps
the ``.npy`` files, values and offsets alike: nothing is unpickled or read per item, so a 400k-item
store opens in milliseconds and its per-item bytes stay in the page cache, shared by every process
that opens it (the ranks of a DDP run and their loader workers), not in each process's own memory.

Builds are crash-safe: a shard is written to ``shard-XXXXX.tmp`` and renamed; the manifest is
rewritten atomically after every finished shard. Re-running a build with the same key and source
skips finished shards; a different key or source (e.g. another cutoff radius) wipes the store and
rebuilds it, never silently reusing stale features. Shards are numbered, so an unfinished build is
only resumed with the shard size it was started with (another size starts it over); a finished
store is reused whatever the shard size asked for.

Builds are exclusive: a process builds a store only while it holds an advisory lock on
``.<store name>.lock`` beside it, so processes that reach one store at once (the local rank 0 of
every node of a multi-node run on a shared filesystem, two jobs sharing ``data/cache``) build it
once: the others wait, then open what the first one built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from clasp_pl.data.parallel import parallel_map
from clasp_pl.data.rejects import Reject
from clasp_pl.rank_zero import rank_zero_logger

MANIFEST = "manifest.json"
Item = dict[str, np.ndarray]

log = rank_zero_logger(__name__)


@dataclass
class ShardResult:
    """What a shard function made of one slice of inputs.

    Attributes:
        items: the items to store, in input order. A rejected input has none, or, in a store that
            keeps one item per input, a placeholder item in its place.
        rejects: why the rejected inputs did not become (real) items.
    """

    items: list[Item]
    rejects: list[Reject] = field(default_factory=list)


ShardFn = Callable[[Sequence], ShardResult]


def key_hash(key: dict) -> str:
    """Short, stable hash of a JSON-serialisable description of how items are computed."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the source fingerprint of a store)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remembered_fingerprint(path: str | Path, memo: str | Path) -> str:
    """:func:`file_fingerprint` of ``path``, hashed in full only once per version of the file.

    The sha256 is kept in the JSON file ``memo`` with the file's resolved path, size and
    modification time (ns); while those match, it is read back instead of hashing the file again
    (a 400k-structure records file is ~250 MB, and every rank of every run needs its
    fingerprint). A file rewritten in place gets a new size or mtime, hence a new hash.
    """
    path = Path(path)
    stat = path.stat()
    version = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = Path(memo)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        known = json.loads(memo.read_text())
        if {k: known[k] for k in version} == version:
            return str(known["sha256"])
    digest = file_fingerprint(path)
    with contextlib.suppress(OSError):  # a read-only cache folder: hash again next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(memo, {**version, "sha256": digest})
    return digest


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_shard(folder: Path, items: list[Item]) -> None:
    """Write ``items`` (dicts with the same fields) as one shard, atomically."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fields = items[0].keys() if items else []
    for name in fields:
        arrays = [np.atleast_1d(item[name]) for item in items]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        values = np.concatenate(arrays)
        np.save(tmp / f"{name}.npy", values)
        np.save(tmp / f"{name}.ptr.npy", np.r_[0, np.cumsum(lengths)])
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


class ArrayStore:
    """Read access to a finished store: ``store[i]`` is item ``i`` as a dict of arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = json.loads((self.root / MANIFEST).read_text())
        if not self.manifest.get("complete"):
            raise RuntimeError(f"cache {self.root} is incomplete; rebuild it (prepare_data)")
        self._shards: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        filled = [shard for shard in self.manifest["shards"] if shard["count"]]
        for shard in filled:
            folder = self.root / shard["name"]
            fields = {}
            for name in self.manifest["fields"]:
                values = np.load(folder / f"{name}.npy", mmap_mode="r")
                # A plain view of the map: indexed once per item read, without np.memmap's
                # per-index wrapping.
                ptr = np.load(folder / f"{name}.ptr.npy", mmap_mode="r").view(np.ndarray)
                fields[name] = (values, ptr)
            self._shards.append(fields)
        counts = [shard["count"] for shard in filled]
        self._starts = np.r_[0, np.cumsum(counts)].astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        local = index - self._starts[shard]
        return {
            name: values[ptr[local] : ptr[local + 1]]
            for name, (values, ptr) in self._shards[shard].items()
        }

    def lengths(self, name: str) -> np.ndarray:
        """``[n_items]`` int64 length of each item's value of a field (from the offsets alone)."""
        if not self._shards:
            return np.zeros(0, np.int64)
        return np.concatenate([np.diff(shard[name][1]) for shard in self._shards])

    def field(self, name: str) -> np.ndarray:
        """All items' values of a field concatenated (for per-item scalars: ``[n_items]``).

        An empty store has no recorded fields or dtypes: any name gives an empty int64 array
        (usable as an index).
        """
        if not self._shards:
            return np.zeros(0, np.int64)
        return np.concatenate([np.asarray(shard[name][0]) for shard in self._shards])


def _run_shard(args: tuple[ShardFn, Path, Sequence]) -> tuple[str, int, list[Reject]]:
    """Compute and write one shard; returns its name, item count and rejects."""
    shard_fn, folder, inputs = args
    result = shard_fn(inputs)
    write_shard(folder, result.items)
    return folder.name, len(result.items), result.rejects


def build_store(
    root: str | Path,
    inputs: Sequence | Callable[[], Sequence],
    shard_fn: ShardFn,
    key: dict,
    source: str,
    shard_size: int = 2048,
    workers: int = 1,
    desc: str = "caching",
) -> tuple[ArrayStore, list[Reject]]:
    """Build (or resume, or reuse) a store of ``shard_fn`` applied to ``inputs`` in shards.

    Args:
        root: store folder.
        inputs: the items to process, in order (e.g. record lines), or a function returning
            them, called only when something has to be built.
        shard_fn: maps a slice of inputs to a :class:`ShardResult` (the items to store and the
            rejected inputs). Must be picklable (a module-level function or
            ``functools.partial``) when ``workers > 1``.
        key: JSON-serialisable description of the computation (config, model, versions).
        source: fingerprint of the inputs (e.g. the records file's sha256).
        shard_size: inputs per shard (an unfinished build resumes only with the same size).
        workers: processes used to compute shards (see :func:`parallel_map`).

    Returns:
        The opened store and the rejects collected in this call (resumed shards' rejects were
        reported by the call that built them and are kept in the manifest, as JSON objects).
    """
    root = Path(root)
    wanted = {"key": key, "key_hash": key_hash(key), "source": source}
    if _finished(root, wanted):
        return ArrayStore(root), []
    with _exclusive_build(root):
        if _finished(root, wanted):  # another process built it while this one waited
            return ArrayStore(root), []
        inputs = inputs() if callable(inputs) else inputs
        return _build(root, inputs, shard_fn, wanted, shard_size, workers, desc)


def _finished(root: Path, wanted: dict) -> bool:
    manifest = _read_manifest(root)
    return bool(manifest and manifest.get("complete") and _same_build(manifest, wanted))


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


@contextlib.contextmanager
def _exclusive_build(root: Path) -> Iterator[None]:
    """Hold the advisory lock of the store ``root`` (blocking; released on exit or death)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", root)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    root: Path,
    inputs: Sequence,
    shard_fn: ShardFn,
    wanted: dict,
    shard_size: int,
    workers: int,
    desc: str,
) -> tuple[ArrayStore, list[Reject]]:
    """Resume or start the build of ``root`` (the caller holds its lock)."""
    manifest_path = root / MANIFEST
    manifest = _read_manifest(root)
    if not (manifest and _same_build(manifest, wanted) and _same_shards(manifest, shard_size)):
        shutil.rmtree(root, ignore_errors=True)
        manifest = {
            **wanted,
            "shard_size": shard_size,
            "complete": False,
            "shards": [],
            "fields": [],
            "rejects": [],
        }
    root.mkdir(parents=True, exist_ok=True)

    n_shards = (len(inputs) + shard_size - 1) // shard_size
    done = {shard["name"] for shard in manifest["shards"]}
    todo = [
        (shard_fn, root / f"shard-{i:05d}", inputs[i * shard_size : (i + 1) * shard_size])
        for i in range(n_shards)
        if f"shard-{i:05d}" not in done
    ]
    new_rejects: list[Reject] = []
    with tqdm(total=n_shards, initial=n_shards - len(todo), desc=desc, unit="shard") as bar:
        for name, count, rejects in parallel_map(_run_shard, todo, workers=workers, progress=False):
            manifest["shards"].append({"name": name, "count": count})
            manifest["rejects"].extend(asdict(reject) for reject in rejects)
            new_rejects.extend(rejects)
            if count and not manifest["fields"]:
                manifest["fields"] = _fields_of(root / name)
            _write_json_atomic(manifest_path, manifest)
            bar.update()
    manifest["shards"].sort(key=lambda shard: shard["name"])
    manifest["complete"] = True
    _write_json_atomic(manifest_path, manifest)
    return ArrayStore(root), new_rejects


def _same_build(manifest: dict, wanted: dict) -> bool:
    """Whether a manifest describes the same computation (key) on the same inputs (source)."""
    return (
        manifest.get("key_hash") == wanted["key_hash"]
        and manifest.get("source") == wanted["source"]
    )


def _same_shards(manifest: dict, shard_size: int) -> bool:
    """Whether an unfinished build's shards cut the inputs as ``shard_size`` does (resumable)."""
    return manifest.get("shard_size") == shard_size


def _fields_of(folder: Path) -> list[str]:
    return sorted(p.name[: -len(".npy")] for p in folder.glob("*.npy") if ".ptr." not in p.name)
