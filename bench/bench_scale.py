"""Benchmark: the pipeline at paper scale on data from ``scale_generate.py``, and a projection.

Stages (each row of the table says whether it was measured here or extrapolated, and from what):

1. **generate** ``--n`` structures and their CIFs (``scale_generate.py``, reused when present);
2. **ingest** the first ``--ingest-sample`` CIFs through the per-file ingestion path in this
   process (``--max-atoms 1000``): CIFs/s/core over CPU time; the full ingest is extrapolated;
3. **featurize** the crystal-graph store (``--workers`` processes; graphs/s/core over the CPU
   time of this process and its children), then the token and cached text-feature stores of the
   default data module; bytes on disk per structure;
4. **train** with 2-process gloo DDP (the model of ``conf/model/clasp.yaml``: CGCNN + frozen
   MiniLM with cached text features; ``torch.nn.parallel.DistributedDataParallel``, AdamW) for
   ``--steps`` steps over the cached data of ``--n`` and of a ``--small`` prefix, with ``num_workers`` 0 and 2: start-up
   (data module prepare + setup on the existing cache, model build), peak RSS of each training
   process (``VmHWM``), samples/s and the loader stall share (time in ``next(loader)`` over step
   time), after ``WARMUP`` steps;
5. **atom budget**: per-step activation memory (bytes saved for backward, summed by a
   ``saved_tensors_hooks``; what bounds GPU memory) and sites per batch over ``--memory-steps``
   steps, with batches of ``--batch`` pairs and with ``--atom-budget`` sites;
6. **validation recall** at ``--val-pairs`` pairs gathered over 2 gloo ranks: the
   :class:`~clasp_pl.evaluation.callbacks.RetrievalMetrics` gather + metric code on random
   embeddings, time and peak RSS added;
7. **embed and search**: crystal embeddings/s of the default model on ``--embed-sample``
   structures (400k extrapolated); per-query learned and hybrid search latency p50/p95 against a
   ``--index-size`` float16 index of random embeddings (formulas of the generated structures).

Then a projection to a cluster (16-core ingest of 400k; an epoch on 8 GPUs at global batch 2,048)
from these per-core figures and stated GPU assumptions.

Usage: ``python bench/bench_scale.py --n 25000 [--work data/scale] [--out FILE]``
(``make bench-scale N=25000``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scale_generate
import torch
import torch.distributed as dist
from tables import emit_table

from clasp_pl.data.cache import ArrayStore
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.featurize import build_graph_store
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
from clasp_pl.data.records import iter_record_lines, iter_records, write_record_lines
from clasp_pl.text.config import TextConfig

WORLD = 2
WARMUP = 5
PAPER_N = 400_000
FROZEN_TEXT = TextConfig(freeze=True)


@dataclass
class Row:
    """One figure of the table: what, value, unit, and how it was obtained."""

    what: str
    value: float
    unit: str
    how: str  # "measured (...)" or "extrapolated (...)"


# ----------------------------------------------------------------------------- helpers
def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def proc_status(key: str) -> float:
    """A ``/proc/self/status`` memory figure (``VmHWM``, ``RssAnon``...) in MiB."""
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key + ":")) / 1024


def reset_peak_rss() -> None:
    """Make ``VmHWM`` the current RSS (Linux ``clear_refs`` 5), so a later peak is a stage's."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(target: Callable, *args: object, timeout: float = 900) -> list[dict]:
    """Run ``target(rank, port, out_dir, *args)`` on 2 gloo ranks; their saved results."""
    ctx = mp.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = [ctx.Process(target=target, args=(r, port, out_dir, *args)) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
        for p in procs:
            if p.is_alive():
                p.kill()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"{target.__name__}: ranks exited {[p.exitcode for p in procs]}")
        return [torch.load(Path(out_dir) / f"{r}.pt") for r in range(WORLD)]


@contextlib.contextmanager
def process_group(rank: int, port: int) -> Iterator[None]:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def data_module(records: Path, cache: Path, **options: object) -> CrystalTextDataModule:
    """The text tower of ``clasp fit --preset pretrain`` (frozen MiniLM, its pooled outputs
    cached) over ``records``, with the library's default captions (title + abstract + keywords,
    256 tokens; the preset's are the title, 64 tokens)."""
    return CrystalTextDataModule(
        records=str(records), cache_dir=str(cache), text=FROZEN_TEXT, **options
    )


def pretrain_model():
    """The model of ``conf/model/clasp.yaml``: CGCNN 64/3/128, frozen MiniLM, MLP heads."""
    from clasp_pl.models.clasp import CLaSPModule, HeadsConfig

    heads = HeadsConfig(crystal_hidden=[256], text_hidden=[512])
    return CLaSPModule(text=FROZEN_TEXT, heads=heads)


# ----------------------------------------------------------------------------- stages
def generate(n: int, work: Path, workers: int) -> tuple[Path, bool]:
    """The records file of ``n`` generated structures (and CIFs), and whether it is new."""
    folder = work / f"n{n}"
    records = folder / "records.jsonl.gz"
    if records.exists():
        return records, False
    scale_generate.generate(n, folder, workers=workers)
    return records, True


def prefix_records(records: Path, n: int) -> Path:
    """The first ``n`` records of ``records`` as their own file (its own cache)."""
    path = records.parent / f"first{n}.jsonl.gz"
    if not path.exists():
        write_record_lines(itertools.islice(iter_record_lines(records), n), path)
    return path


def bench_ingest(records: Path, sample: int) -> tuple[float, dict[str, int]]:
    """CIFs/s/core of the per-file ingestion path on the first ``sample`` CIFs."""
    options = IngestOptions(max_atoms=1000, time_limit=0)
    paths = [records.parent / r.source for r in itertools.islice(iter_records(records), sample)]
    outcomes: dict[str, int] = {}
    start = time.process_time()
    for path in paths:
        result = job_to_record(Job(path.stem, str(path), path=str(path)), options)
        reason = getattr(result, "reason", "kept")
        outcomes[reason] = outcomes.get(reason, 0) + 1
    return len(paths) / (time.process_time() - start), outcomes


def complete_stores(cache_root: Path) -> set[str]:
    """Names of the stores under ``cache_root`` that are complete (reused, not built)."""
    manifests = (p / "manifest.json" for p in cache_root.glob("*") if p.is_dir())
    return {m.parent.name for m in manifests if m.exists() and '"complete": true' in m.read_text()}


def bench_featurize(records: Path, cache: Path, workers: int, sample: int) -> dict[str, float]:
    """Per-core rates on fresh builds of the first ``sample`` records (crystal graphs over
    ``workers`` processes, then tokens + frozen text features), then the default caches of all
    of ``records`` built (or reused where complete: builds resume) and their bytes/structure."""
    n = sum(1 for _ in iter_record_lines(records))
    head = prefix_records(records, sample)
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
        dm = data_module(head, Path(scratch), prepare_workers=workers)
        cpu = cpu_seconds()
        shard = -(-sample // workers)  # one shard per worker
        build_graph_store(head, dm.cache_root / "graphs", GraphConfig(), workers, shard)
        graph_cpu = cpu_seconds() - cpu
        cpu = cpu_seconds()
        dm.prepare_data()  # the graphs are there: tokens and text features
        text_cpu = cpu_seconds() - cpu
    dm = data_module(records, cache, prepare_workers=workers)
    reused = complete_stores(dm.cache_root)
    wall = time.perf_counter()
    dm.prepare_data()
    return {
        "n": n,
        "graphs/s/core": sample / graph_cpu,
        "captions/s/core": sample / text_cpu,
        "full wall s": time.perf_counter() - wall,
        "reused": ", ".join(sorted(reused)) or "none",
        "graph bytes/structure": folder_bytes(dm.cache_root / "graphs") / n,
        "cache bytes/structure": folder_bytes(dm.cache_root) / n,
        "mean sites": float(
            ArrayStore(dm.cache_root / "graphs").lengths("species_per_site").mean()
        ),
    }


def endless(loader) -> Iterator:
    """The batches of ``loader``, epoch after epoch (a small prefix has few batches per epoch)."""
    if len(loader) == 0:
        raise ValueError("the training split has fewer pairs than one global batch")
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def _train_rank(
    rank: int,
    port: int,
    out_dir: str,
    records: str,
    cache: str,
    steps: int,
    batch: int,
    workers: int,
) -> None:
    """One DDP training process: start-up, ``steps`` steps, stall share, peak RSS."""
    torch.set_num_threads(1)
    with process_group(rank, port):
        start = time.perf_counter()
        dm = data_module(Path(records), Path(cache), batch_size=batch, num_workers=workers)
        dm.prepare_data()
        dm.setup("fit")
        data_s = time.perf_counter() - start
        model = pretrain_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        startup_s = time.perf_counter() - start
        loader = endless(dm.train_dataloader())
        waits, totals, cpu, fetch_cpu = [], [], [], []
        for _ in range(steps):
            c0 = time.process_time()
            t0 = time.perf_counter()
            pairs = next(loader)
            t1 = time.perf_counter()
            fetch_cpu.append(time.process_time() - c0)
            crystal, text = ddp(pairs)
            model.loss_fn(crystal, text, pairs["group_ids"]).backward()
            optimizer.step()
            optimizer.zero_grad()
            waits.append(t1 - t0)
            totals.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        del loader
        counted = slice(WARMUP, None)
        result = {
            "data setup s": data_s,
            "startup s": startup_s,
            "stall": sum(waits[counted]) / sum(totals[counted]),
            "samples/s": WORLD * batch * len(totals[counted]) / sum(totals[counted]),
            "samples/s/core": batch * len(cpu[counted]) / sum(cpu[counted]),
            "fetch cpu s/batch": float(np.mean(fetch_cpu[counted])),
            "peak RSS MiB": proc_status("VmHWM"),
            "RssAnon MiB": proc_status("RssAnon"),
            "RssFile MiB": proc_status("RssFile"),
            "train pairs": len(dm.datasets["train"]),
        }
        torch.save(result, Path(out_dir) / f"{rank}.pt")


def bench_train(records: Path, cache: Path, steps: int, batch: int, workers: int) -> dict:
    ranks = spawn(_train_rank, str(records), str(cache), steps, batch, workers)
    merged = {key: max(r[key] for r in ranks) for key in ranks[0]}
    merged["samples/s"] = min(r["samples/s"] for r in ranks)
    merged["samples/s/core"] = min(r["samples/s/core"] for r in ranks)
    return merged


def saved_bytes_per_step(model, batches) -> list[tuple[int, int]]:
    """``(sites, bytes saved for backward)`` of one forward+backward per batch."""
    sizes = []
    for pairs in batches:
        total = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            crystal, text = model(pairs)
            loss = model.loss_fn(crystal, text, pairs["group_ids"])
        loss.backward()
        model.zero_grad()
        sizes.append((len(pairs["crystal_index"]), total))
    return sizes


def bench_atom_budget(records: Path, cache: Path, batch: int, budget: int, steps: int) -> dict:
    model = pretrain_model()
    results = {}
    for name, options in (("batch", {}), ("budget", {"atom_budget": budget})):
        dm = data_module(records, cache, batch_size=batch if not options else 4 * batch, **options)
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        sizes = saved_bytes_per_step(model, itertools.islice(loader, steps))
        sites = np.array([s for s, _ in sizes])
        saved = np.array([b for _, b in sizes]) / 2**20
        results[name] = {
            "batches/epoch": len(loader),
            "max sites": int(sites.max()),
            "median sites": float(np.median(sites)),
            "max MiB": float(saved.max()),
            "median MiB": float(np.median(saved)),
        }
    return results


def _recall_rank(rank: int, port: int, out_dir: str, pairs: int, dim: int) -> None:
    """Half of ``pairs`` random embeddings per rank through the callback's gather + metrics."""
    from clasp_pl.evaluation.callbacks import RetrievalMetrics

    torch.set_num_threads(1)
    with process_group(rank, port):
        generator = torch.Generator().manual_seed(rank)
        local = pairs // WORLD
        callback = RetrievalMetrics()
        callback._outputs = [
            {
                "crystal_emb": torch.nn.functional.normalize(
                    torch.randn(local, dim, generator=generator), dim=1
                ),
                "text_emb": torch.nn.functional.normalize(
                    torch.randn(local, dim, generator=generator), dim=1
                ),
                "group_ids": torch.randint(0, pairs // 2, (local,), generator=generator),
                "item_id": torch.arange(local) + rank * local,
            }
        ]

        def all_gather(value: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(value) for _ in range(WORLD)]
            dist.all_gather(parts, value.contiguous())
            return torch.stack(parts)

        def broadcast(value: object, src: int = 0) -> object:
            holder = [value]
            dist.broadcast_object_list(holder, src=src)
            return holder[0]

        trainer = SimpleNamespace(
            world_size=WORLD, global_rank=rank, strategy=SimpleNamespace(broadcast=broadcast)
        )
        module = SimpleNamespace(trainer=trainer, all_gather=all_gather, log=lambda *a, **k: None)
        reset_peak_rss()
        before = proc_status("VmRSS")
        start = time.perf_counter()
        callback._finish(module.trainer, module, "val")
        seconds = time.perf_counter() - start
        result = {
            "s": seconds,
            "MiB": proc_status("VmHWM") - before,
            "items": callback.last_num_items,
        }
        torch.save(result, Path(out_dir) / f"{rank}.pt")


def bench_embed_and_search(records: Path, embed_sample: int, index_size: int, queries: int) -> dict:
    from clasp_pl.api import embed_dim, embed_structures, embed_texts
    from clasp_pl.search.hybrid import hybrid_search, lexical_index
    from clasp_pl.search.index import EmbeddingIndex, write_index

    torch.set_num_threads(1)  # per-core figures
    model = pretrain_model().eval()
    sample = list(itertools.islice(iter_records(records), embed_sample))
    start = time.process_time()
    embed_structures(model, sample)
    embed_rate = len(sample) / (time.process_time() - start)
    formulas = [r.composition.reduced_formula for r in sample]
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(index_size, embed_dim(model), generator=generator)
    meta = [{"id": str(i), "formula": formulas[i % len(formulas)]} for i in range(index_size)]
    texts = [f"{formulas[i % len(formulas)]} structure {i}" for i in range(queries)]
    query_emb = embed_texts(model, texts)
    with tempfile.TemporaryDirectory() as folder:
        write_index(folder, vectors, meta, {"checkpoint": "random"})
        index = EmbeddingIndex(folder)
        start = time.process_time()
        lexical = lexical_index(index.meta)
        lexical_s = time.process_time() - start
        learned, hybrid = [], []
        for row in range(queries):  # CPU time of one thread: robust to a shared machine
            start = time.process_time()
            index.search(query_emb[row : row + 1], 10)
            learned.append(time.process_time() - start)
            start = time.process_time()
            hybrid_search(index, query_emb[row : row + 1], texts[row : row + 1], 10, 0.1, lexical)
            hybrid.append(time.process_time() - start)
    ms = lambda values, q: 1000 * float(np.percentile(values[1:], q))  # noqa: E731
    return {
        "embed/s": embed_rate,
        "lexical build s": lexical_s,
        "learned p50 ms": ms(learned, 50),
        "learned p95 ms": ms(learned, 95),
        "hybrid p50 ms": ms(hybrid, 50),
        "hybrid p95 ms": ms(hybrid, 95),
    }


def bench_recall(pairs: int, dim: int) -> dict:
    ranks = spawn(_recall_rank, pairs, dim)
    return {
        "s": max(r["s"] for r in ranks),
        "MiB": ranks[0]["MiB"],  # rank 0 computes the metrics
        "MiB other ranks": max(r["MiB"] for r in ranks[1:]),
        "items": ranks[0]["items"],
    }


# ----------------------------------------------------------------------------- table
@dataclass
class Assumptions:
    """What the cluster projection assumes (no GPU here)."""

    cores: int = 16
    gpus: int = 8
    global_batch: int = 2048
    train_fraction: float = 0.9
    gpu_sites_per_s: float = 2.0e6  # CGCNN fwd+bwd in bf16 on one H100/H200 (assumed)
    gpu_captions_per_s: float = 10_000.0  # frozen MiniLM inference on one GPU (assumed)
    loader_cores_per_gpu: int = 2  # 16 cores / 8 GPUs


def projection(feat: dict, ingest_rate: float, train: dict, batch: int, a: Assumptions) -> str:
    """The cluster projection table from the measured per-core and per-step figures."""
    n = PAPER_N
    ingest_s = n / (ingest_rate * a.cores)
    graph_s = n / (feat["graphs/s/core"] * a.cores)
    text_s = n / a.gpu_captions_per_s
    steps = int(n * a.train_fraction) // a.global_batch
    local = a.global_batch // a.gpus
    gpu_step = local * feat["mean sites"] / a.gpu_sites_per_s
    loader_rate = a.loader_cores_per_gpu * batch / train["fetch cpu s/batch"]  # per GPU
    loader_step = local / loader_rate
    step = max(gpu_step, loader_step)
    lines = [
        "### Projection: 400k structures on a 16-core node with 8 GPUs",
        "",
        "| quantity | value | from |",
        "|---|---:|---|",
        f"| ingest 400k CIFs, {a.cores} cores | {ingest_s / 60:.1f} min | measured {ingest_rate:.0f} CIFs/s/core |",
        f"| crystal-graph cache, {a.cores} cores | {graph_s / 60:.1f} min | measured {feat['graphs/s/core']:.0f} graphs/s/core |",
        f"| cached text features, 1 GPU | {text_s / 60:.1f} min | assumed {a.gpu_captions_per_s:,.0f} captions/s |",
        f"| (or on {a.cores} CPU cores) | {n / (feat['captions/s/core'] * a.cores) / 60:.1f} min | measured {feat['captions/s/core']:.0f} structures/s/core, tokens + frozen MiniLM |",
        f"| cache on disk | {n * feat['cache bytes/structure'] / 2**30:.1f} GiB | measured {feat['cache bytes/structure'] / 1024:.1f} KiB/structure |",
        f"| steps per epoch (global batch {a.global_batch}) | {steps} | {a.train_fraction:.0%} train split |",
        f"| GPU step, {local} pairs × {feat['mean sites']:.0f} sites | {gpu_step * 1000:.0f} ms | assumed {a.gpu_sites_per_s:.1e} sites/s fwd+bwd |",
        f"| loader per step, {a.loader_cores_per_gpu} workers per GPU | {loader_step * 1000:.0f} ms | measured {batch / train['fetch cpu s/batch']:.0f} samples/s/core fetch+collate (CPU time, num_workers 0) |",
        f"| **epoch, 8 GPUs** | **{steps * step / 60:.1f} min** | max(GPU, loader) per step × steps |",
        "",
        "Assumptions: ingest and featurization scale linearly over cores (shards are independent); "
        "the all-gather of 2,048 × 256 embeddings and the gradient all-reduce of the ~1 M trained "
        "parameters are small against the step; the loader keeps up when its step time is below "
        "the GPU's. The GPU rates are assumed, not measured (no GPU was lent).",
    ]
    return "\n".join(lines)


SECTION = "## paper scale"


def replace_block(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the markers ``<!-- name -->`` and ``<!-- /name -->`` of the Markdown
    file ``path``, replacing what was there; without them, append the block at the end of its
    ``## paper scale`` section (or of the file). Hand-written text around it is kept."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif f"{SECTION}\n" in text:
        before, rest = text.split(f"{SECTION}\n", 1)
        cut = rest.find("\n## ") + 1 if "\n## " in rest else len(rest)
        text = (
            f"{before}{SECTION}\n{rest[:cut].rstrip()}\n\n{block}\n\n{rest[cut:]}".rstrip() + "\n"
        )
    else:
        text = f"{text.rstrip()}\n\n{SECTION}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_000)
    parser.add_argument("--small", type=int, default=0, help="prefix size for the RSS row (n/4)")
    parser.add_argument("--work", default="data/scale")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ingest-sample", type=int, default=1000)
    parser.add_argument("--featurize-sample", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--atom-budget", type=int, default=0, help="default: batch x mean sites")
    parser.add_argument("--memory-steps", type=int, default=20)
    parser.add_argument("--val-pairs", type=int, default=20_000)
    parser.add_argument("--embed-sample", type=int, default=500)
    parser.add_argument("--index-size", type=int, default=PAPER_N)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", default=None, help="append the table to this file")
    parser.add_argument("--results", default=None, help="replace this file's scale section")
    args = parser.parse_args()
    work = Path(args.work)
    small_n = args.small or args.n // 4
    clock = time.perf_counter()
    rows: list[Row] = []

    start = time.perf_counter()
    records, fresh = generate(args.n, work, args.workers)
    how = f"measured, {args.workers} processes" if fresh else "reused from an earlier run"
    rows.append(Row("generate structures + CIFs", time.perf_counter() - start, "s", how))
    ingest_rate, outcomes = bench_ingest(records, args.ingest_sample)
    kept = outcomes.get("kept", 0)
    rows.append(
        Row(
            "ingest CIFs/s/core",
            ingest_rate,
            "CIFs/s",
            f"measured on {args.ingest_sample} CIFs ({kept} kept, {outcomes})",
        )
    )
    rows.append(
        Row(
            f"ingest {args.n:,} CIFs, 1 core",
            args.n / ingest_rate / 60,
            "min",
            "extrapolated from the rate",
        )
    )
    cache = work / "cache"
    small = prefix_records(records, small_n)
    feat = bench_featurize(records, cache, args.workers, args.featurize_sample)
    data_module(small, cache, prepare_workers=args.workers).prepare_data()
    rows.append(
        Row(
            "graphs/s/core",
            feat["graphs/s/core"],
            "graphs/s",
            f"measured, fresh build of the first {args.featurize_sample:,} structures over "
            f"{args.workers} processes (CPU time); N mean {feat['mean sites']:.0f} sites",
        )
    )
    rows.append(
        Row(
            "tokens + frozen text features, structures/s/core",
            feat["captions/s/core"],
            "structures/s",
            f"measured, fresh build of the first {args.featurize_sample:,} (CPU time; "
            "the tower runs once per distinct caption)",
        )
    )
    rows.append(
        Row(
            f"default caches of N={args.n:,}",
            feat["full wall s"] / 60,
            "min",
            f"measured wall (complete before this run, reused: {feat['reused']})",
        )
    )
    rows.append(
        Row("graph cache per structure", feat["graph bytes/structure"] / 1024, "KiB", "measured")
    )
    rows.append(
        Row("all caches per structure", feat["cache bytes/structure"] / 1024, "KiB", "measured")
    )

    trains = {}
    for label, path, workers in (("small", small, 0), ("full", records, 0), ("full", records, 2)):
        n_label = small_n if label == "small" else args.n
        result = bench_train(path, cache, args.steps, args.batch, workers)
        trains[(label, workers)] = result
        how = f"measured, 2 gloo ranks, {args.steps} steps, batch {args.batch}/rank, num_workers {workers}"
        rows.append(
            Row(
                f"N={n_label:,} nw={workers}: peak RSS per training process",
                result["peak RSS MiB"],
                "MiB",
                how
                + f" (RssAnon {result['RssAnon MiB']:.0f}, RssFile {result['RssFile MiB']:.0f})",
            )
        )
        rows.append(
            Row(
                f"N={n_label:,} nw={workers}: samples/s (wall, 2 ranks)",
                result["samples/s"],
                "pairs/s",
                how,
            )
        )
        rows.append(
            Row(
                f"N={n_label:,} nw={workers}: samples/s/core (CPU time, 1 thread/rank)",
                result["samples/s/core"],
                "pairs/s",
                how,
            )
        )
        rows.append(
            Row(f"N={n_label:,} nw={workers}: loader stall share", 100 * result["stall"], "%", how)
        )
        rows.append(
            Row(
                f"N={n_label:,} nw={workers}: start-up (data + model)",
                result["startup s"],
                "s",
                f"measured; data module prepare+setup on the cache {result['data setup s']:.1f} s",
            )
        )
    small_rss, full_rss = trains[("small", 0)]["peak RSS MiB"], trains[("full", 0)]["peak RSS MiB"]
    rows.append(
        Row(
            f"RSS ratio N={args.n:,} / N={small_n:,}",
            full_rss / small_rss,
            "×",
            "measured (target ≤ 1.5 from 25k to 400k)",
        )
    )
    full0 = trains[("full", 0)]
    epoch_s = full0["train pairs"] / full0["samples/s"]
    rows.append(
        Row(
            f"epoch of N={args.n:,} here (2 ranks)",
            epoch_s / 60,
            "min",
            "extrapolated from samples/s (nw=0)",
        )
    )

    budget = args.atom_budget or int(args.batch * feat["mean sites"])
    memory = bench_atom_budget(records, cache, args.batch, budget, args.memory_steps)
    for name, m in memory.items():
        label = (
            f"batch {args.batch}"
            if name == "batch"
            else f"atom budget {budget} (≤ {4 * args.batch} pairs)"
        )
        rows.append(
            Row(
                f"{label}: max / median activation memory per step",
                m["max MiB"],
                "MiB",
                f"measured over {args.memory_steps} steps; median {m['median MiB']:.0f} MiB; sites per batch max {m['max sites']}, median {m['median sites']:.0f}; {m['batches/epoch']} batches/epoch",
            )
        )

    recall = bench_recall(args.val_pairs, 256)
    rows.append(
        Row(
            f"validation recall, {recall['items']:,} pairs over 2 ranks",
            recall["s"],
            "s",
            f"measured; peak RSS added {recall['MiB']:.0f} MiB on rank 0 (computes), "
            f"{recall['MiB other ranks']:.0f} MiB on the other rank (gathers, receives)",
        )
    )
    search = bench_embed_and_search(records, args.embed_sample, args.index_size, args.queries)
    rows.append(
        Row(
            "clasp embed rate (default model, CPU time, 1 thread)",
            search["embed/s"],
            "structures/s",
            f"measured on {args.embed_sample}",
        )
    )
    rows.append(
        Row(
            f"clasp embed of {PAPER_N:,}, 1 process",
            PAPER_N / search["embed/s"] / 60,
            "min",
            "extrapolated",
        )
    )
    for kind in ("learned", "hybrid"):
        rows.append(
            Row(
                f"{kind} search p50 / p95, {args.index_size:,} index",
                search[f"{kind} p50 ms"],
                "ms",
                f"measured over {args.queries} queries (CPU time, 1 thread); p95 {search[f'{kind} p95 ms']:.1f} ms",
            )
        )
    rows.append(
        Row(
            f"lexical index build, {args.index_size:,} formulas",
            search["lexical build s"],
            "s",
            "measured (once per index)",
        )
    )

    lines = [
        f"### Paper scale: N = {args.n:,} generated structures (`python bench/bench_scale.py --n {args.n}`; {os.cpu_count()} shared CPU cores, total {(time.perf_counter() - clock) / 60:.1f} min)",
        "",
        "| quantity | value | unit | how |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {r.what} | {r.value:,.2f} | {r.unit} | {r.how} |" for r in rows]
    table = (
        "\n".join(lines)
        + "\n\n"
        + projection(feat, ingest_rate, full0, args.batch, Assumptions())
        + "\n"
    )
    emit_table(table, args.out)
    if args.results:
        command = (
            f"`python bench/bench_scale.py --n {args.n}` ({time.strftime('%Y-%m-%d %H:%M')} UTC)"
        )
        replace_block(Path(args.results), f"bench_scale N={args.n}", f"{command}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
