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
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.errors import UserError
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.resources import CONF_DIR
from clasp_pl.text.config import TextConfig

log = logging.getLogger(__name__)

SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""LightningCLI's subcommands, served by :func:`main`."""


class ConfigError(UserError):
    """A config file or command line that LightningCLI refuses (an unknown key, a bad value)."""

    kind = "config"


PRETRAIN = ("trainer/cpu.yaml", "data/amcsd.yaml", "model/clasp.yaml")
PRESETS: dict[str, tuple[str, ...]] = {
    "pretrain": PRETRAIN,
    "smoke": (*PRETRAIN, "trainer/debug.yaml", "model/tiny.yaml"),
    "composition": (*PRETRAIN, "model/composition.yaml"),
    "fused": (*PRETRAIN, "model/fused.yaml"),
    "chgnet": (*PRETRAIN, "model/composition.yaml", "model/chgnet.yaml"),
}
"""``--preset NAME``: the packaged configs (under :data:`~clasp_pl.resources.CONF_DIR`) it
composes, in order: ``pretrain`` is ``make pretrain``'s run, ``smoke`` a seconds-long run of the
tiny model under ``runs/debug``, ``composition`` the tuned composition-only baseline, ``fused``
the default run with the fused crystal tower (graph + composition + symmetry), ``chgnet`` the
composition baseline's recipe with frozen CHGNet features beside the descriptor (the optional
extra ``clasp_pl[chgnet]``)."""
PRESET_FLAG = "--preset"


def expand_presets(argv: list[str]) -> list[str]:
    """``argv`` with each ``--preset NAME`` replaced by the ``--config`` files of the preset.

    Raises:
        ConfigError: an unknown preset name.
    """
    out: list[str] = []
    words = iter(argv)
    for word in words:
        name = word.split("=", 1)[1] if word.startswith(PRESET_FLAG + "=") else None
        if word == PRESET_FLAG:
            name = next(words, "")
        if name is None:
            out.append(word)
            continue
        if name not in PRESETS:
            raise ConfigError(
                PRESET_FLAG, f"no preset {name!r}", f"pick one of {', '.join(PRESETS)}"
            )
        for config in PRESETS[name]:
            out += ["--config", str(CONF_DIR / config)]
    return out


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
        log.info(
            "logs under %s, checkpoints in %s", Path(logger.init_args.save_dir).resolve(), folder
        )
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


def config_sources(argv: list[str]) -> str:
    """The config files named in ``argv`` (``--config F``, ``-c F``, ``--config=F``), or
    ``"command line"`` when there are none: where a refused key may come from."""
    files = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in ("--config", "-c")] + [
        word.split("=", 1)[1] for word in argv if word.startswith("--config=")
    ]
    return ", ".join(files) or "command line"


def run_lightning_cli(cli_class: type[LightningCLI], model, data, argv: list[str]) -> None:
    """Run ``cli_class`` on ``argv`` (``--preset NAME`` expanded); a refused option or config
    key raises :class:`ConfigError` instead of printing the whole usage."""
    argv = expand_presets(argv)
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
