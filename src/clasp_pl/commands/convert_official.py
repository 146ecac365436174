"""``clasp convert-official CKPT OUT``: a checkpoint of the authors' code as a clasp_pl one.

Usage::

    clasp convert-official official.ckpt converted.ckpt --text-model allenai/scibert_scivocab_uncased

See :mod:`clasp_pl.models.official` for how the tensors map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from clasp_pl.commands.options import command_parser
from clasp_pl.errors import UserError
from clasp_pl.models.official import (
    PAPER_TEXT_MODEL,
    ConversionError,
    convert,
    data_hparams,
    load_official_state_dict,
    save_converted_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "clasp convert-official", "Convert a checkpoint of the official CLaSP code."
    )
    parser.add_argument("ckpt", help="official checkpoint (.ckpt) or state dict")
    parser.add_argument("out", help="converted Lightning checkpoint")
    parser.add_argument("--config", help="YAML with a model section (text, loss, optim...)")
    parser.add_argument(
        "--text-model", help=f"text model name or folder (default: {PAPER_TEXT_MODEL})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clasp convert-official``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.config and not Path(args.config).is_file():
        raise UserError(args.config, "no such config file", "check the path of --config")
    config = yaml.safe_load(Path(args.config).read_text()) if args.config else None
    try:
        module, notes = convert(
            load_official_state_dict(args.ckpt), config=config, text_model=args.text_model
        )
    except ConversionError as error:
        raise UserError(
            args.ckpt,
            "cannot convert: " + " ".join(str(error).split()),
            "pass the official run's --config (and --text-model) so that the model fits",
        ) from error
    save_converted_checkpoint(module, args.out, notes, data_hparams(module, config or {}))
    print(f"converted {args.ckpt} → {args.out}")
    print("\n".join(f"  {note}" for note in notes))
    return 0
