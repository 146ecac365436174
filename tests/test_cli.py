"""The ``clasp`` command's own wiring: linked settings, checkpoint folders and visible messages."""

from __future__ import annotations

import logging

import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from clasp_pl.cli import show_info_messages
from clasp_pl.commands.fit import CLaSPCLI, is_model_checkpoint
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.rank_zero import rank_zero_logger
from helpers.data import REPO


class KeepsBest(ModelCheckpoint):
    """A ModelCheckpoint subclass: it gets the run's checkpoint folder too."""


class NotAModelCheckpoint(Callback):
    """A name that ends like the class it is not."""


def test_model_checkpoints_are_recognised_by_class_not_name() -> None:
    assert is_model_checkpoint("lightning.pytorch.callbacks.ModelCheckpoint")
    assert is_model_checkpoint(f"{__name__}.KeepsBest")
    assert not is_model_checkpoint(f"{__name__}.NotAModelCheckpoint")
    assert not is_model_checkpoint("lightning.pytorch.callbacks.EarlyStopping")


def test_cli_links_caption_length_and_checkpoint_folder(records_file, tmp_path) -> None:
    """``data.max_length`` becomes the model's ``text_max_length`` hyper-parameter, and a
    ModelCheckpoint subclass without a folder writes under ``<save_dir>/<name>/checkpoints``."""
    cli = CLaSPCLI(
        CLaSPModule,
        CrystalTextDataModule,
        run=False,
        args=[
            "--config",
            str(REPO / "conf/model/clasp.yaml"),
            "--config",
            str(REPO / "conf/model/tiny.yaml"),
            f"--data.records={records_file}",
            f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.max_length=48",
            "--trainer.logger=TensorBoardLogger",
            f"--trainer.logger.save_dir={tmp_path / 'runs'}",
            "--trainer.logger.name=linked",
            f"--trainer.callbacks+={__name__}.KeepsBest",
            "--trainer.enable_progress_bar=false",
        ],
    )
    assert cli.model.hparams["text_max_length"] == 48 == cli.datamodule.max_length
    checkpoints = [c for c in cli.trainer.callbacks if isinstance(c, KeepsBest)]
    assert [c.dirpath for c in checkpoints] == [str(tmp_path / "runs" / "linked" / "checkpoints")]


def test_info_messages_reach_stderr_when_logging_is_not_configured(monkeypatch, capsys) -> None:
    package = logging.getLogger("clasp_pl")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as outside pytest
    monkeypatch.setattr(package, "handlers", [])
    level = package.level
    package.setLevel(logging.NOTSET)
    try:
        show_info_messages()
        show_info_messages()  # once: a second call adds no second handler
        rank_zero_logger("clasp_pl.data.example").info("3 structures left out")
    finally:
        package.setLevel(level)
    assert capsys.readouterr().err == "3 structures left out\n"


@pytest.mark.parametrize(("rank", "shown"), [(0, True), (1, False)])
def test_package_messages_speak_on_rank_zero_only(monkeypatch, caplog, rank, shown) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank)
    caplog.set_level(logging.INFO)
    rank_zero_logger("clasp_pl.data.example").info("skipped x")
    assert ("skipped x" in caplog.messages) is shown
