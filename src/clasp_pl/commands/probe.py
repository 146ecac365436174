"""``clasp probe``: linear probes of the frozen crystal encoder, pretrained vs random init.

Usage::

    clasp probe                                  # last checkpoint of runs/pretrain, mineral_class
    clasp probe --ckpt runs/pretrain/checkpoints/last.ckpt --target crystal_system --folds 10

See :mod:`clasp_pl.evaluation.probe` for the protocol.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from clasp_pl.checkpoints import PRETRAIN_RUN, find_checkpoint
from clasp_pl.commands.options import command_parser, default_of
from clasp_pl.evaluation.probe import (
    ProbeOptions,
    default_probe_dir,
    run_probe,
    write_probe_report,
)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "clasp probe", "Linear probes of the frozen crystal encoder, pretrained vs random init."
    )

    def option(name: str, **kwargs) -> None:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=default_of(ProbeOptions, name), **kwargs)

    parser.add_argument(
        "--ckpt", type=Path, help=f"CLaSP checkpoint (default: last of {PRETRAIN_RUN})"
    )
    option(
        "target",
        help="mineral_class, crystal_system, or a numeric meta key of the records (e.g. heat_ref)",
    )
    option("records", type=Path, help="records file whose structures are probed")
    option("cache_dir", type=Path, help="where their crystal graphs are cached")
    option("random_seeds", type=int, nargs="*", help="one random-init baseline per seed")
    option(
        "raw_random",
        action="store_true",
        help="also probe random encoders without BN recalibration",
    )
    option("head", action="store_true", help="probe CLaSP's projection embedding, not the tower")
    option("folds", type=int, help="k of the k-fold split by paper")
    option("strength", type=float, help="logistic C / ridge alpha (L2, on standardised features)")
    option("batch_size", type=int, help="structures per forward pass")
    option("workers", type=int, help="processes building the caches")
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/probe-<target>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp probe``; returns the exit status."""
    args = build_parser().parse_args(argv)
    checkpoint = args.ckpt or find_checkpoint()
    options = ProbeOptions(**{f.name: getattr(args, f.name) for f in fields(ProbeOptions)})
    rows = run_probe(checkpoint, options)
    out = args.out or default_probe_dir(checkpoint, options.target)
    print(write_probe_report(rows, checkpoint, options, out))
    print(f"wrote {out / 'probe.md'} and {out / 'probe.json'}")
    return 0
