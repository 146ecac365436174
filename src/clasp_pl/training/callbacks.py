"""Training callbacks: exact resume, time-sliced runs and per-step run records.

- :class:`ResumeState` checkpoints the training loader's position and the RNG states and restores
  them when a run resumes (``--ckpt_path last``), so it continues exactly where the checkpoint was
  taken. Lightning 2.6 only fast-forwards a stateful loader that it builds *after* restoring the
  loops; CLaSP's ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, which
  builds the training loader before the restore, so Lightning alone would restart the epoch from
  its first batch.
- :class:`StopAfterSteps` ends a fit early without changing the run's LR schedule (time-sliced
  jobs).
- :class:`RunRecorder` writes one JSON line per training step and rank (loss, LR, batch ids, the
  width of the cross-rank gathered batch the contrastive loss scored): smoke runs and tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.hooks import RemovableHandle

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.loading import ResumableDataLoader
from clasp_pl.losses import gather_batch
from clasp_pl.training.rng import rng_states, set_rng_states


class ResumeState(L.Callback):
    """Checkpoint the training loader's position and the RNG states; restore them on resume.

    With it, ``fit(ckpt_path=...)`` from a mid-epoch checkpoint continues with the very batch the
    interrupted run would have trained on next, and with the same dropout masks. The RNG states
    are the global-zero rank's (the one that writes checkpoints) and are restored on every rank:
    exact when all ranks were seeded alike (``seed_everything``), as in CLaSP's configs.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": rng_states()}
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        if isinstance(loader, ResumableDataLoader):
            state["loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        loader = trainer.train_dataloader
        if "loader" in state:
            if isinstance(loader, ResumableDataLoader):
                loader.load_state_dict(state["loader"])
            else:
                rank_zero_warn(
                    "ResumeState: the training loader is not a ResumableDataLoader; "
                    "the resumed run restarts its epoch from the first batch"
                )
        set_rng_states(state["rng"])


class StopAfterSteps(L.Callback):
    """Stop fitting once ``trainer.global_step`` reaches ``steps``.

    Unlike ``max_steps``, this leaves ``estimated_stepping_batches`` (hence the LR schedule) as
    configured, so a run can be trained in slices that resume (``--ckpt_path last``) into exactly
    the run that was planned. Pair it with a checkpoint at that step (``every_n_train_steps``).
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class RunRecorder(L.Callback):
    """Append one JSON line per training step to ``<folder>/rank<global rank>.jsonl``.

    Each line holds ``step`` (global step after the update), ``epoch``, ``loss``, ``lr`` (first
    parameter group), ``rank``, ``world_size``, the local ``item_ids`` and ``group_ids``, and
    ``gathered_group_ids``: the group ids of the cross-rank batch that the contrastive loss scored
    (``world_size`` times the local batch under DDP), taken by re-running the loss's own
    :func:`~clasp_pl.losses.gather_batch` on its inputs. Lines are flushed at once, so a killed
    run keeps the steps it finished.

    Args:
        folder: where the per-rank files go (created if missing).
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._gathered: list[int] = []
        self._hook: RemovableHandle | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._hook = pl_module.loss_fn.register_forward_hook(self._record_gather)

    def _record_gather(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        crystal_emb, text_emb, group_ids = (x.detach() for x in inputs)
        self._gathered = gather_batch(crystal_emb, text_emb, group_ids)[2].tolist()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: PairBatch,
        batch_idx: int,
    ) -> None:
        record = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "loss": float(outputs["loss"]),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "item_ids": batch["item_id"].tolist(),
            "group_ids": batch["group_ids"].tolist(),
            "gathered_group_ids": self._gathered,
        }
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
