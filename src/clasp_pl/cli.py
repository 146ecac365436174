"""The ``clasp`` command.

- ``clasp fit|validate|test --config conf/...yaml`` trains or evaluates with LightningCLI;
- ``clasp data ingest|build-default ...`` turns CIFs, tables or the AMCSD database into records,
  ``clasp data keywords`` extracts keyword captions for stage-2 fine-tuning;
- ``clasp eval``, ``clasp embed``, ``clasp search``: retrieval evaluation and text search;
- ``clasp map``, ``clasp serve``: an interactive embedding map and a local search page;
- ``clasp finetune``: property prediction from the pretrained crystal encoder;
- ``clasp probe``: linear probes of the frozen crystal encoder, pretrained vs random init;
- ``clasp convert-official CKPT OUT``: a checkpoint of the authors' code as a clasp_pl one.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.text.config import TextConfig


def show_info_messages() -> None:
    """Show the package's INFO messages (rejects, skipped structures, keyword matches...) on
    stderr, as plain lines. Logging that is configured already (a root handler) is left as it
    is: the messages then go wherever it sends them."""
    package = logging.getLogger("clasp_pl")
    package.setLevel(logging.INFO)
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)


def is_model_checkpoint(class_path: str) -> bool:
    """Whether a callback's (resolved, dotted) class path names ``ModelCheckpoint`` or a
    subclass of it."""
    module, _, name = class_path.rpartition(".")
    callback_class = getattr(importlib.import_module(module), name, None) if module else None
    return isinstance(callback_class, type) and issubclass(callback_class, ModelCheckpoint)


class CLaSPCLI(LightningCLI):
    """LightningCLI whose model and data agree on the text model, the caption length and the
    crystal-graph settings."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in TextConfig.__dataclass_fields__:
            parser.link_arguments(f"model.text.{name}", f"data.text.{name}")
        for name in GraphConfig.__dataclass_fields__:
            parser.link_arguments(f"data.graph.{name}", f"model.graph.{name}")
        parser.link_arguments("data.max_length", "model.text_max_length")

    def before_instantiate_classes(self) -> None:
        """Checkpoints without a ``dirpath`` go to ``<save_dir>/<run name>/checkpoints``: one
        fixed folder per run name (not per TensorBoard version), so ``--ckpt_path last``
        finds the previous run's ``last.ckpt`` and runs of different names never collide."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.get("logger")
        if not logger or not hasattr(logger, "init_args"):
            return
        folder = Path(logger.init_args.save_dir) / logger.init_args.name / "checkpoints"
        for callback in config.trainer.get("callbacks") or []:
            if is_model_checkpoint(callback.class_path) and not callback.init_args.dirpath:
                callback.init_args.dirpath = str(folder)


@contextlib.contextmanager
def frozen_towers_in_eval_mode() -> Iterator[None]:
    """Silence Lightning's warning about modules in eval mode at the start of training: frozen
    towers stay in eval mode on purpose (no dropout, fixed batch-norm statistics), and the model
    summary still counts them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        yield


def lightning_main(argv: list[str] | None) -> None:
    """Run LightningCLI on ``argv`` (``fit``, ``validate``, ``test``, ``predict`` + options)."""
    with frozen_towers_in_eval_mode():
        CLaSPCLI(
            CLaSPModule,
            CrystalTextDataModule,
            args=argv,
            save_config_kwargs={"overwrite": True},
        )


SUBCOMMANDS = {
    "data": "clasp_pl.data.commands",
    "eval": "clasp_pl.evaluation.evaluate",
    "convert-official": "clasp_pl.convert_official",
    "finetune": "clasp_pl.finetune_cli",
    "probe": "clasp_pl.evaluation.probe",
    "embed": "clasp_pl.search.commands:embed_main",
    "search": "clasp_pl.search.commands:search_main",
    "map": "clasp_pl.commands.map",
    "serve": "clasp_pl.commands.serve",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clasp`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    show_info_messages()
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in SUBCOMMANDS:
        module, _, function = SUBCOMMANDS[words[0]].partition(":")
        return getattr(importlib.import_module(module), function or "main")(words[1:]) or 0
    lightning_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
