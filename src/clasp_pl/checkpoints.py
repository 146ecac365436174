"""Checkpoint files: the one reader, the one writer, and finding a run's checkpoint.

Every command reads checkpoints through :func:`read_checkpoint` (``torch.load`` with
``weights_only=True``: tensors, containers and primitives only, no pickled objects), which turns
a missing, corrupt or refused file into one :class:`CheckpointError` naming the file, the reason
and the fix. :func:`read_settings` reads what a checkpoint says about its model and data module,
once, for every command that rebuilds them (``clasp eval``, ``clasp probe``, the Python API).

A low layer: it imports torch and the standard library only, so that every other module
(models, evaluation, search, commands) may use it.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from pickle import UnpicklingError
from typing import Any, Literal, get_args

import torch

from clasp_pl.errors import UserError

MODEL_SETTINGS = "hyper_parameters"
"""Checkpoint key of the LightningModule's hyper-parameters."""
DATA_SETTINGS = "datamodule_hyper_parameters"
"""Checkpoint key of the data module's hyper-parameters (``clasp fit``, ``clasp convert-official``)."""
PRETRAIN_RUN = Path("runs/pretrain")
"""The run folder of ``make pretrain``, where commands look for a checkpoint when none is named."""
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: missing, corrupt, refused or of the wrong kind
    (``path``, ``reason``, ``fix`` as for every :class:`~clasp_pl.errors.UserError`)."""

    kind = "checkpoint"


def read_checkpoint(path: str | Path, *, mmap: bool = True) -> dict[str, Any]:
    """The checkpoint dict stored in ``path``, on the CPU, loaded with ``weights_only=True``.

    Args:
        mmap: memory-map the tensors instead of reading them (cheap when only the settings are
            wanted); files in torch's legacy (non-zip) format are read whole.

    Raises:
        CheckpointError: the file is missing, not a readable torch file, holds pickled objects
            (refused by weights-only loading) or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file", "check the path, or train one with `clasp fit`")
    try:
        loaded = torch.load(
            path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path)
        )
    except UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is None:
            detail = _UNPICKLER_ERROR.search(str(error))
            raise _unreadable(path, detail.group(1) if detail else type(error).__name__) from None
        raise CheckpointError(
            path,
            f"holds a pickled object ({refused.group(1)}), which weights-only loading refuses",
            "save it again with tensors, containers and plain values only (as `clasp fit` does)",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise _unreadable(path, str(error).split(". ")[0].strip() or type(error).__name__) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(
            path,
            f"holds a {type(loaded).__name__}, not a checkpoint dict",
            "pass a checkpoint written by `clasp fit` or `clasp convert-official`",
        )
    return loaded


def _unreadable(path: Path, detail: str) -> CheckpointError:
    """The error of a file that torch cannot read; ``detail`` is torch's reason, shortened."""
    return CheckpointError(
        path,
        f"not a readable torch checkpoint ({detail[:120]})",
        "the file is corrupt or truncated, or not a checkpoint: copy or train it again",
    )


def public_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without LightningCLI's private entries (``_instantiator``, ``_class_path``:
    keys starting with ``_``), i.e. the constructor arguments."""
    return {key: value for key, value in settings.items() if not key.startswith("_")}


@dataclass(frozen=True)
class CheckpointSettings:
    """What a checkpoint records about how to rebuild its model and its data.

    Attributes:
        path: the checkpoint file.
        model: the LightningModule's constructor arguments (``hyper_parameters``).
        data: the data module's constructor arguments; empty when the checkpoint records none
            (written by a bare ``Trainer.save_checkpoint``, not by ``clasp fit``).
    """

    path: Path
    model: dict[str, Any]
    data: dict[str, Any]

    def require_data(self) -> dict[str, Any]:
        """A copy of :attr:`data`.

        Raises:
            CheckpointError: when the checkpoint records no data-module settings.
        """
        if not self.data:
            raise CheckpointError(
                self.path,
                "records no data-module settings",
                "use a checkpoint written by `clasp fit` or `clasp convert-official`",
            )
        return dict(self.data)


def read_settings(path: str | Path) -> CheckpointSettings:
    """The model and data-module settings of a checkpoint (memory-mapped: the weights are not
    read), with LightningCLI's private entries left out.

    Raises:
        CheckpointError: see :func:`read_checkpoint`.
    """
    checkpoint = read_checkpoint(path, mmap=True)
    return CheckpointSettings(
        Path(path),
        public_settings(checkpoint.get(MODEL_SETTINGS) or {}),
        public_settings(checkpoint.get(DATA_SETTINGS) or {}),
    )


def write_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    model_settings: Mapping[str, Any],
    data_settings: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a Lightning-format checkpoint that ``LightningModule.load_from_checkpoint`` and
    :func:`read_settings` read: weights, model settings, optionally the data-module settings,
    and ``extra`` top-level entries (plain values). Creates the folder; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": dict(state_dict),
        MODEL_SETTINGS: dict(model_settings),
        "pytorch-lightning_version": version("lightning"),
        **extra,
    }
    if data_settings is not None:
        checkpoint[DATA_SETTINGS] = dict(data_settings)
    torch.save(checkpoint, path)
    return path


CheckpointChoice = Literal["last", "best"]
"""Which checkpoint of a run :func:`find_checkpoint` picks: ``last`` (the final state: with
conf/trainer/cpu.yaml's weight averaging, the final average of the weights) or ``best`` (the
one that scored best on the validation split)."""
CHECKPOINT_CHOICES: tuple[CheckpointChoice, ...] = get_args(CheckpointChoice)
LAST_CHECKPOINT = "last.ckpt"
BEST_PREFIX = "best"


def find_checkpoint(run: str | Path = PRETRAIN_RUN, choice: CheckpointChoice = "last") -> Path:
    """The checkpoint of a run folder to evaluate when none is named (the newest by
    modification time among several).

    - ``last``: its ``last.ckpt`` (the final state), else its newest ``.ckpt``;
    - ``best``: its ``best*.ckpt`` (selected on the validation split).

    Raises:
        CheckpointError: when the folder holds no ``.ckpt`` file, or no best one for ``best``.
    """
    run = Path(run)
    candidates = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(
            run, "no checkpoint under this folder", "run `make pretrain` or pass --ckpt"
        )
    if choice == "best":
        best = [p for p in candidates if p.name.startswith(BEST_PREFIX)]
        if not best:
            raise CheckpointError(
                run,
                "no best*.ckpt under this folder",
                "train with a ModelCheckpoint that monitors a validation metric "
                "(conf/trainer/cpu.yaml), or pick the last checkpoint",
            )
        return best[-1]
    last = [p for p in candidates if p.name == LAST_CHECKPOINT]
    return (last or candidates)[-1]
