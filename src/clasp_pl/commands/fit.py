"""``clasp fit|validate|test|predict``: pretraining with LightningCLI (CLaSP model + data).

Usage::

    clasp fit --preset smoke                            # seconds: the tiny model, a few batches
    clasp fit --preset pretrain --trainer.max_epochs 3
    clasp fit --config conf/trainer/cpu.yaml --config conf/data/amcsd.yaml --config conf/model/clasp.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.errors import UserError
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.text.config import TextConfig

SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""LightningCLI's subcommands, served by :func:`main`."""


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


class ConfigError(UserError):
    """A config file or command line that LightningCLI refuses (an unknown key, a bad value)."""

    kind = "config"


def config_sources(argv: list[str]) -> str:
    """The config files named in ``argv`` (``--config F``, ``-c F``, ``--config=F``), or
    ``"command line"`` when there are none: where a refused key may come from."""
    files = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("--config", "-c")] + [
        word.split("=", 1)[1] for word in argv if word.startswith("--config=")
    ]
    return ", ".join(files) or "command line"


def run_lightning_cli(cli_class: type[LightningCLI], model, data, argv: list[str]) -> None:
    """Run ``cli_class`` on ``argv``; a refused option or config key raises :class:`ConfigError`
    instead of printing the whole usage."""
    try:
        with frozen_towers_in_eval_mode():
            cli_class(
                model,
                data,
                args=argv,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
            )
    except argparse.ArgumentError as error:
        command = " ".join(["clasp", *argv[:1]])
        raise ConfigError(
            config_sources(argv),
            " ".join(str(error).split()),
            f"check the key's spelling; `{command} --help` lists every option",
        ) from error


def main(argv: list[str]) -> int:
    """Run LightningCLI on ``argv`` (``fit``, ``validate``, ``test``, ``predict`` + options)."""
    run_lightning_cli(CLaSPCLI, CLaSPModule, CrystalTextDataModule, argv)
    return 0
