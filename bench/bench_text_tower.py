"""Benchmark: one training step of the text side, four ways, side by side in one run.

Batch ``--batch-size`` captions (default 128) of ``--tokens`` tokens each (default 64, no
padding), MiniLM-L6 text tower + the default text head (384 -> 512 -> 256). A step is forward,
backward and the AdamW update of whatever is trained on the text side:

- ``frozen, cached features``: the tower's pooled outputs are cached; only the head runs;
- ``top-N, cached lower states``: the lower ``L - N`` layers' hidden states are cached; the top
  ``N`` layers, the pooling and the head run;
- ``top-N, full model``: the same trainable layers, with the frozen lower layers run every step
  (no gradients into them);
- ``full fine-tuning``: every layer and the embeddings trained.

Usage: ``python bench/bench_text_tower.py [--steps 5] [--trainable-layers 2] [--device cpu|cuda]
[--out FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tables import emit_table

from clasp_pl.models.heads import ProjectionHead
from clasp_pl.text.config import TextConfig
from clasp_pl.text.tower import TextTower

Step = Callable[[], torch.Tensor]  # one forward pass of the text side -> embeddings [B, D]


@dataclass
class Mode:
    """A way of training the text side: its tower config and what a step feeds it."""

    name: str
    text: TextConfig
    inputs: str  # "features", "hidden" or "tokens"


def modes(model: str, top: int) -> list[Mode]:
    return [
        Mode("frozen, cached features", TextConfig(model=model, freeze=True), "features"),
        Mode(
            f"top-{top}, cached lower states",
            TextConfig(model=model, trainable_layers=top),
            "hidden",
        ),
        Mode(f"top-{top}, full model", TextConfig(model=model, trainable_layers=top), "tokens"),
        Mode("full fine-tuning", TextConfig(model=model, freeze=False), "tokens"),
    ]


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_mode(mode: Mode, ids: torch.Tensor, steps: int, device: str) -> dict[str, float]:
    """Mean seconds per training step (after one warm-up step) and the trained parameters."""
    tower = TextTower(mode.text).to(device).train()
    head = ProjectionHead(tower.out_dim, 256, [512]).to(device).train()
    mask = torch.ones_like(ids)
    with torch.no_grad():
        if mode.inputs == "features":
            features = tower(ids, mask)
        elif mode.inputs == "hidden":
            hidden = tower.lower_hidden(ids, mask)
    forward: Step = {
        "features": lambda: head(features),
        "hidden": lambda: head(tower.from_lower_hidden(hidden, mask)),
        "tokens": lambda: head(tower(ids, mask)),
    }[mode.inputs]
    params = [p for p in (*tower.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = (
        torch.autocast("cuda", torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    )
    seconds = 0.0
    for step in range(steps + 1):
        synchronise(device)
        start = time.perf_counter()
        with autocast:
            loss = forward().float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronise(device)
        if step:  # step 0 warms up
            seconds += time.perf_counter() - start
    trained = sum(p.numel() for p in tower.parameters() if p.requires_grad)
    return {"step s": seconds / steps, "trained tower params": trained}


def table(results: dict[str, dict[str, float]], device: str, batch: int, tokens: int) -> str:
    """Markdown table: step time, samples/s and the ratio to full fine-tuning per mode."""
    full = results["full fine-tuning"]["step s"]
    lines = [
        f"### Text-side training step on {device} (MiniLM-L6 + head, batch {batch}, "
        f"{tokens} tokens)",
        "",
        "| text side | trained tower params | step s | samples/s | × full fine-tuning speed |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['trained tower params'] / 1e6:.2f} M | {r['step s']:.4f} | "
            f"{batch / r['step s']:.0f} | {full / r['step s']:.1f}× |"
        )
    cached, live = (r["step s"] for name, r in results.items() if name.startswith("top-"))
    lines += [
        "",
        f"Top layers on cached lower-layer states vs running the frozen lower layers every "
        f"step: **{live / cached:.1f}×** faster.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--trainable-layers", type=int, default=2)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no GPU on this machine; skipped")
        return 0
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch_size, args.tokens))
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    ids = ids.to(args.device)
    results = {
        mode.name: bench_mode(mode, ids, args.steps, args.device)
        for mode in modes(args.model, args.trainable_layers)
    }
    emit_table(table(results, args.device, args.batch_size, args.tokens), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
