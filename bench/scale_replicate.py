"""A K-times larger cached dataset made of copies of a measured one, for what depends on N only.

Featurizing 400k generated structures takes hours of CPU on this machine, but per-process
memory, start-up and loader cost of training over a *complete* cache depend on the number of
items, the store layout and the bytes on disk, not on which structures the graphs are. This
script makes, from records file ``R`` (``n`` records) and its complete caches:

- ``OUT/records.jsonl.gz``: ``R``'s gzip members ``K`` times over (a valid gzip file of ``K x n``
  records, as many bytes to fingerprint as a real file of that size);
- its cache folder (:func:`~clasp_pl.data.datamodule.records_cache_root` under ``--cache``):
  every store of ``R``'s cache with its shards copied ``K`` times (copy ``c`` renumbered after
  copy ``c - 1``), the graph store's ``record_index`` shifted by ``c x n`` and its ``group_id``
  (a 64-bit hash of the paper) mixed with ``c`` so each copy has its own papers, and the
  manifests' source set to the new file's sha256.

A data module over ``OUT/records.jsonl.gz`` then opens the caches as complete (never reading the
lines), exactly as it would open ones it had built. What this does not stand for: ingest and
featurization rates (measured per core on real builds) and anything that reads graph values
as data (the copies repeat them).

Usage: ``python bench/scale_replicate.py --records data/scale/n25000/records.jsonl.gz
--cache data/scale/cache --copies 16 --out data/scale/r400000``
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from clasp_pl.data.cache import MANIFEST, file_fingerprint
from clasp_pl.data.datamodule import records_cache_root
from clasp_pl.data.records import iter_record_lines, stable_hash64

SHIFTED = {"record_index"}  # per-item fields holding a record position (shifted by c x n)
MIXED = {"group_id"}  # per-item fields holding a paper hash (made distinct per copy)


def concatenated_records(records: Path, copies: int, out: Path) -> Path:
    """``records`` ``copies`` times as one gzip file ``out/records.jsonl.gz``."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "records.jsonl.gz"
    with open(records, "rb") as source:
        data = source.read()
    with open(target, "wb") as handle:
        for _ in range(copies):
            handle.write(data)
    return target


def copy_shard(source: Path, target: Path, copy: int, n_records: int) -> None:
    """Shard folder ``source`` as copy number ``copy`` at ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    salt = np.int64(stable_hash64(f"copy {copy}"))
    for path in source.glob("*.npy"):
        field = path.name.split(".")[0]
        if copy and not path.name.endswith(".ptr.npy") and field in SHIFTED | MIXED:
            values = np.load(path)
            values = values + copy * n_records if field in SHIFTED else values ^ salt
            np.save(target / path.name, values)
        else:
            shutil.copyfile(path, target / path.name)


def replicate_store(source: Path, target: Path, copies: int, n_records: int, fingerprint: str):
    """Store folder ``source`` ``copies`` times over at ``target``, sourced from ``fingerprint``."""
    manifest = json.loads((source / MANIFEST).read_text())
    if not manifest.get("complete"):
        raise SystemExit(f"{source} is not a complete store")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shards = []
    for copy in range(copies):
        for shard in manifest["shards"]:
            name = f"shard-{len(shards):05d}"
            copy_shard(source / shard["name"], target / name, copy, n_records)
            shards.append({"name": name, "count": shard["count"]})
    manifest.update(source=fingerprint, shards=shards, rejects=manifest["rejects"] * copies)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def truncate_shard(source: Path, target: Path, first: int, n_records: int) -> int:
    """Shard folder ``source`` (records from ``first`` on) cut to its items of the first
    ``n_records`` records at ``target`` (by ``record_index`` in the graph store, which has no item
    for a rejected record; one item per record otherwise); returns the number of items kept."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    fields = sorted(p.name[: -len(".npy")] for p in source.glob("*.npy") if ".ptr." not in p.name)
    if "record_index" in fields:
        keep = int(np.searchsorted(np.load(source / "record_index.npy"), n_records))
    else:
        count = len(np.load(source / f"{fields[0]}.ptr.npy", mmap_mode="r")) - 1
        keep = min(n_records - first, count)
    for field in fields:
        ptr = np.load(source / f"{field}.ptr.npy")[: keep + 1]
        values = np.load(source / f"{field}.npy", mmap_mode="r")[: ptr[-1]]
        np.save(target / f"{field}.npy", np.ascontiguousarray(values))
        np.save(target / f"{field}.ptr.npy", ptr)
    return keep


def prefix_store(source: Path, target: Path, n_records: int, fingerprint: str) -> None:
    """Store ``source`` cut to the items of its first ``n_records`` records, at ``target``: what a
    build over those records makes (shards cut at the same records; rejects not kept). Only the
    shards of those records need to be finished (``source`` may still be building)."""
    manifest = json.loads((source / MANIFEST).read_text())
    size = manifest["shard_size"]
    names = [f"shard-{i:05d}" for i in range(-(-n_records // size))]
    if not set(names) <= {shard["name"] for shard in manifest["shards"]}:
        raise SystemExit(f"{source}: the shards of the first {n_records} records are not built")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shards = []
    for index, name in enumerate(names):  # shard i holds records [i x size, (i + 1) x size)
        kept = truncate_shard(source / name, target / name, index * size, n_records)
        shards.append({"name": name, "count": kept})
    manifest.update(source=fingerprint, shards=shards, rejects=[], complete=True)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def prefix_caches(records: Path, cache: Path, prefix: Path) -> None:
    """The complete caches of ``prefix`` (a records file of the first lines of ``records``) cut
    from ``records``'s under ``cache``, instead of featurizing those records again."""
    n_records = sum(1 for _ in iter_record_lines(prefix))
    fingerprint = file_fingerprint(prefix)
    source_root = records_cache_root(cache, records)
    target_root = records_cache_root(cache, prefix)
    for store in sorted(p for p in source_root.iterdir() if (p / MANIFEST).exists()):
        prefix_store(store, target_root / store.name, n_records, fingerprint)


def replicate_caches(records: Path, cache: Path, copies: int, out: Path) -> Path:
    """The records file ``out/records.jsonl.gz`` of ``copies`` copies of ``records`` and its
    complete caches under ``cache``, made from ``records``'s (see the module docstring)."""
    n_records = sum(1 for _ in iter_record_lines(records))
    big = concatenated_records(records, copies, out)
    fingerprint = file_fingerprint(big)
    source_root = records_cache_root(cache, records)
    target_root = records_cache_root(cache, big)
    for store in sorted(p for p in source_root.iterdir() if (p / MANIFEST).exists()):
        replicate_store(store, target_root / store.name, copies, n_records, fingerprint)
    return big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="records file with complete caches")
    parser.add_argument("--cache", required=True, help="cache dir of those caches (and the copy)")
    parser.add_argument("--copies", type=int, required=True)
    parser.add_argument("--out", required=True, help="folder of the new records file")
    args = parser.parse_args()
    big = replicate_caches(Path(args.records), Path(args.cache), args.copies, Path(args.out))
    print(f"{big}: {args.copies} copies of {args.records}; caches under {args.cache}")


if __name__ == "__main__":
    main()
