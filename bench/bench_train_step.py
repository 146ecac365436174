"""Benchmark: one CLaSP training step on the default data and model, broken down.

For the default config (CGCNN 64/3/128, MiniLM text tower, batch 128 of AMCSD titles) three
ways of treating the text side are timed side by side in one run:

- ``cached``: frozen tower, its pooled outputs precomputed once (the default);
- ``frozen-live``: frozen tower run every step (no grad, eval mode) — what the official code pays;
- ``trainable``: text tower trained end to end (forward + backward).

Per step: collate (loader fetch + collate), crystal tower+head forward+backward, text side
forward(+backward), loss forward+backward (gather included under DDP), and the full optimizer step
timed end to end; shares are of the sum of the parts. ``--device cuda`` runs on a GPU in bf16
autocast and adds peak memory and the text tower's model-FLOPs utilisation (6·params per trained
token, 2·params per token when only forward, over the time of the text side) against the GPU's
dense bf16 peak: ``--peak-tflops``, by default 989 for an H100/H200 and 312 for an A100 (other
GPUs: n/a unless given). In ``cached`` mode the tower does not run (only the text head does), so
its MFU is n/a. Without a GPU it says so and exits.

A second table (``--max-atoms 1000``) times forward+backward+AdamW step of the default CGCNN
crystal tower alone (64/3/128, 8 Å, 12 neighbours) on batches of ``--large-count`` real default
structures grown to about 200, 500 and 1,000 sites (:mod:`large_cells`), each size in a fresh
process; the time is the median step after the first. Memory per structure, two ways, of the
first step (activations, gradients, the new AdamW state): the peak resident memory it adds (Linux
``VmHWM`` reset through ``/proc/self/clear_refs`` before it, minus ``VmRSS`` then; on a GPU the
peak allocated CUDA memory added), and the bytes of the tensors autograd saves for backward
(``saved_tensors_hooks``; a tensor saved twice counts twice), both divided by the batch size.

Usage: ``python bench/bench_train_step.py [--steps 8] [--device cpu|cuda] [--peak-tflops T]
[--large-count 4] [--large-only] [--out FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from clasp_pl.data.batch import collate_graphs
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig, structure_to_graph
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig
from clasp_pl.text.config import TextConfig

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "cached": TextConfig(freeze=True),
    "frozen-live": TextConfig(freeze=True),
    "trainable": TextConfig(freeze=False),
}
PEAK_BF16_DENSE_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 peak (TFLOPS, no sparsity) by a substring of the GPU's name."""


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Timer:
    def __init__(self, device: str):
        self.device, self.totals = device, {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        synchronise(self.device)
        start = time.perf_counter()
        yield
        synchronise(self.device)
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start


def to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def default_peak_tflops(gpu_name: str) -> float | None:
    """The dense bf16 peak (TFLOPS) of a GPU named ``gpu_name``; None when it is not known."""
    return next(
        (peak for key, peak in PEAK_BF16_DENSE_TFLOPS.items() if key in gpu_name.upper()), None
    )


def text_tower_mfu(
    mode: str, params: int, tokens_per_step: float, seconds: float, peak_tflops: float | None
) -> float | None:
    """Model-FLOPs utilisation of the text tower: (2 forward only, 6 trained) x ``params`` x
    ``tokens_per_step`` per ``seconds`` (the text side's time per step), over ``peak_tflops``.

    None in ``cached`` mode (the tower does not run; the time is the head's) or without a peak.
    """
    if mode == "cached" or peak_tflops is None:
        return None
    flops_per_token = (2 if MODES[mode].freeze else 6) * params
    return flops_per_token * tokens_per_step / seconds / 1e12 / peak_tflops


def bench_mode(
    mode: str, steps: int, batch_size: int, device: str, peak_tflops: float | None = None
) -> dict:
    text = MODES[mode]
    datamodule = CrystalTextDataModule(
        records=str(REPO / "data/amcsd_default.jsonl.gz"),
        cache_dir=str(REPO / "data/cache"),
        text=text,
        cache_text_features=mode == "cached",
        caption_fields=["title"],
        max_length=64,
        batch_size=batch_size,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = CLaSPModule(text=text, heads=HeadsConfig(crystal_hidden=[256], text_hidden=[512]))
    model = model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = (
        torch.autocast("cuda", torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    )
    timer, tokens = Timer(device), 0
    loader = iter(datamodule.train_dataloader())
    for step in range(steps + 1):  # step 0 warms up and is not counted
        if step == 1:
            timer.totals.clear()
            tokens = 0
        with timer("collate"):
            batch = to(next(loader), device)
        tokens += int(batch["attention_mask"].sum())
        with autocast:
            with timer("crystal fwd+bwd"):
                crystal = model.encode_crystals(batch)
                crystal.float().sum().backward()
            with timer("text fwd" if text.freeze else "text fwd+bwd"):
                if mode == "cached":
                    text_emb = model.text_head(batch["text_features"])
                else:
                    text_emb = model.encode_texts(batch["input_ids"], batch["attention_mask"])
                text_emb.float().sum().backward()
            with timer("loss fwd+bwd"):
                c = crystal.detach().float().requires_grad_()
                t = text_emb.detach().float().requires_grad_()
                model.loss_fn(c, t, batch["group_ids"]).backward()
            optimizer.zero_grad()
            with timer("full step"):
                c_emb, t_emb = model(batch)
                model.loss_fn(c_emb.float(), t_emb.float(), batch["group_ids"]).backward()
                optimizer.step()
                optimizer.zero_grad()
    result = {name: seconds / steps for name, seconds in timer.totals.items()}
    result["samples/s"] = batch_size / result["full step"]
    result["tokens/step"] = tokens / steps
    if device == "cuda":
        result["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
        params = sum(p.numel() for p in model.text_tower.parameters())
        seconds = result["text fwd" if text.freeze else "text fwd+bwd"]
        result["text MFU"] = text_tower_mfu(
            mode, params, result["tokens/step"], seconds, peak_tflops
        )
    return result


def peak_note(gpu_name: str, peak_tflops: float | None) -> str:
    """The sentence under the GPU table saying which peak the MFU assumes."""
    if peak_tflops is None:
        return f"Text MFU: n/a, no known peak for {gpu_name} (pass --peak-tflops)."
    return (
        f"Text MFU against a dense bf16 peak of {peak_tflops:g} TFLOPS ({gpu_name}); n/a for "
        "cached features (the text tower does not run)."
    )


def mfu_cell(mfu: float | None) -> str:
    """A table cell: the MFU as a percentage, or n/a."""
    return "n/a" if mfu is None else f"{mfu:.1%}"


def table(results: dict[str, dict], device: str, batch_size: int, peak: str | None = None) -> str:
    """The Markdown table of every mode's step breakdown; ``peak``: :func:`peak_note` (GPU)."""
    parts = ["collate", "crystal fwd+bwd", "text", "loss fwd+bwd"]
    lines = [
        f"### Training step on {device} (default model, batch {batch_size}, AMCSD titles)",
        "",
        "| text side | "
        + " | ".join(f"{p} s (share)" for p in parts)
        + " | full step s | samples/s |"
        + (" peak GiB | text MFU |" if device == "cuda" else ""),
        "|---|" + "---|" * (len(parts) + 2) + ("---|---|" if device == "cuda" else ""),
    ]
    for mode, r in results.items():
        values = [
            r["collate"],
            r["crystal fwd+bwd"],
            r.get("text fwd", r.get("text fwd+bwd")),
            r["loss fwd+bwd"],
        ]
        total = sum(values)
        cells = [f"{v:.3f} ({v / total:.0%})" for v in values]
        extra = f" {r['peak GiB']:.2f} | {mfu_cell(r['text MFU'])} |" if device == "cuda" else ""
        lines.append(
            f"| {mode} | "
            + " | ".join(cells)
            + f" | {r['full step']:.3f} | {r['samples/s']:.0f} |"
            + extra
        )
    cached, live = results["cached"]["samples/s"], results["frozen-live"]["samples/s"]
    lines += [
        "",
        f"Cached frozen text features vs running the frozen encoder every step: "
        f"**{cached / live:.1f}×** samples/s.",
    ]
    if peak:
        lines += ["", peak]
    return "\n".join(lines) + "\n"


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (``VmHWM``) to its current one (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def large_cell_step(size: int, count: int, steps: int, device: str) -> dict[str, float]:
    """Time and memory of ``steps`` CGCNN training steps on ``count`` cells of about ``size``
    sites (run in a fresh process: the peak memory is this size's alone)."""
    from large_cells import large_sets  # bench/ is on the path when run as a script

    torch.manual_seed(0)
    config = GraphConfig()
    structures = large_sets(count, (size,))[size]
    batch = to(collate_graphs([vars(structure_to_graph(s, config)) for s in structures]), device)
    tower = CGCNN(CGCNNConfig(), config).to(device).train()
    optimizer = torch.optim.AdamW(tower.parameters(), lr=1e-4)

    def step() -> int:
        saved = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal saved
            saved += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = tower(batch)
        out.sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        return saved

    synchronise(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = (_status_kib("VmRSS") or 0) * 1024 if _reset_peak_rss() else None
    saved = step()  # the first step's peak: activations, gradients and the new AdamW state
    synchronise(device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = (_status_kib("VmHWM") or 0) * 1024 - before if before is not None else float("nan")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "sites": batch["crystal_index"].numel() / count,
        "edges": batch["edge_src"].numel() / count,
        "step s": seconds,
        "peak MiB per structure": peak / count / 2**20,
        "saved MiB per structure": saved / count / 2**20,
    }


def large_cell_table(count: int, steps: int, device: str) -> str:
    """The Markdown table of :func:`large_cell_step` at about 200, 500 and 1,000 sites."""
    from large_cells import SIZES

    memory = "peak CUDA MiB added" if device == "cuda" else "peak RSS MiB added"
    lines = [
        f"### CGCNN crystal tower training step on large cells ({device}, default tower 64/3/128,"
        f" batch of {count} real default structures grown to each size, median of {steps} steps;"
        f" load average {os.getloadavg()[0]:.1f} at the start)",
        "",
        f"| target sites | mean sites | mean edges | step s (fwd+bwd+AdamW) | structures/s "
        f"| {memory} per structure | autograd-saved MiB per structure "
        f"| batch 128 at this size, GiB ({memory.split(' MiB')[0]} × 128) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    spawn = multiprocessing.get_context("spawn")
    for size in SIZES:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            r = pool.submit(large_cell_step, size, count, steps, device).result()
        lines.append(
            f"| {size} | {r['sites']:.0f} | {r['edges']:.0f} | {r['step s']:.3f} "
            f"| {count / r['step s']:.1f} | {r['peak MiB per structure']:.1f} "
            f"| {r['saved MiB per structure']:.1f} "
            f"| {r['peak MiB per structure'] * 128 / 1024:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="the GPU's dense bf16 peak for the text MFU (default: 989 for H100/H200, 312 for "
        "A100; other GPUs: MFU n/a)",
    )
    parser.add_argument(
        "--large-count", type=int, default=4, help="structures per batch in the large-cell table"
    )
    parser.add_argument(
        "--large-only", action="store_true", help="only the large-cell table (no default data)"
    )
    parser.add_argument("--out", help="append the Markdown tables to this file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no GPU on this machine; skipped")
        return 0
    peak_tflops, peak = None, None
    if args.device == "cuda":
        gpu_name = torch.cuda.get_device_name()
        peak_tflops = args.peak_tflops or default_peak_tflops(gpu_name)
        peak = peak_note(gpu_name, peak_tflops)
    reports = []
    if not args.large_only:
        results = {
            mode: bench_mode(mode, args.steps, args.batch_size, args.device, peak_tflops)
            for mode in MODES
        }
        reports.append(table(results, args.device, args.batch_size, peak))
    reports.append(large_cell_table(args.large_count, args.steps, args.device))
    for report in reports:
        print(report)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
