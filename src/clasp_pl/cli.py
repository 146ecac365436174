"""The ``clasp`` command.

- ``clasp fit|validate|test --config conf/...yaml`` trains or evaluates with LightningCLI;
- ``clasp data ingest|build-default ...`` turns CIFs, tables or the AMCSD database into records;
- ``clasp eval``, ``clasp embed``, ``clasp search``: retrieval evaluation and text search.
"""

from __future__ import annotations

import importlib
import os
import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.text_models import TextConfig


class CLaSPCLI(LightningCLI):
    """LightningCLI whose model and data agree on the text model and the crystal-graph settings."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in TextConfig.__dataclass_fields__:
            parser.link_arguments(f"model.text.{name}", f"data.text.{name}")
        for name in GraphConfig.__dataclass_fields__:
            parser.link_arguments(f"data.graph.{name}", f"model.graph.{name}")


def lightning_main(argv: list[str] | None) -> None:
    """Run LightningCLI on ``argv`` (``fit``, ``validate``, ``test``, ``predict`` + options)."""
    CLaSPCLI(
        CLaSPModule,
        CrystalTextDataModule,
        args=argv,
        save_config_kwargs={"overwrite": True},
    )


SUBCOMMANDS = {
    "data": "clasp_pl.data.commands",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clasp`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[words[0]]).main(words[1:]) or 0
    lightning_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
