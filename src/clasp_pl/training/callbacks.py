"""Training callbacks: weight averaging, exact resume, time-sliced runs and per-step run records.

- :class:`WeightEMA` keeps an exponential moving average of the weights; validation, checkpoints
  and the final model use it (the model selection rule of conf/trainer/cpu.yaml).
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
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.hooks import RemovableHandle

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.loading import ResumableDataLoader
from clasp_pl.losses import gather_batch
from clasp_pl.training.rng import rng_states, set_rng_states

logger = logging.getLogger(__name__)

TRAINING_WEIGHTS = "ema_training_weights"
"""Checkpoint key written by :class:`WeightEMA`: the weights being trained (name -> tensor, the
averaged ones only), whose average the checkpoint's ``state_dict`` holds."""


class WeightEMA(L.Callback):
    """An exponential moving average (EMA) of the weights, for validation, checkpoints and the
    final model.

    After every optimizer step each averaged tensor ``a`` moves towards its trained value ``w``:
    ``a <- a + (w - a) * max(1 - decay, 1 / (n + 1))``, with ``decay = 0.5 ** (1 /
    half_life_steps)`` and ``n`` the updates so far. The first ``1 / (1 - decay)`` updates
    are thus a plain running mean (no pull towards the initial weights, which a constant decay
    keeps for ``decay ** steps`` of the average: 55% after a 600-step run with 0.999), then an
    EMA in which a step's weights count half after ``half_life_steps`` more steps.

    - Validation runs on the average (swapped in at the start of each validation epoch, swapped
      back at its end), so ``val/*`` metrics and a monitored checkpoint score the average.
    - Every checkpoint's ``state_dict`` holds the average: what ``clasp eval``, ``clasp embed``,
      ``clasp finetune`` and ``init_from`` load. The trained weights go under
      :data:`TRAINING_WEIGHTS`, so ``fit(ckpt_path=...)`` resumes both, bit for bit: a resumed
      run ends with the average of the run done straight.
    - When fitting ends, the model holds the average.

    Averaged are the trainable parameters and the floating-point buffers (batch-norm
    statistics) of the state dict; frozen weights (a frozen text tower) are left as they are and
    stored once. Under DDP every rank averages the same synchronised weights, so all ranks hold
    the same average; the global-zero rank writes it.

    Lightning's ``EMAWeightAveraging`` follows the same checkpoint layout but deep-copies and
    averages the whole module every step, frozen text model included (22 M weights with
    MiniLM, 110 M with SciBERT), with ``decay * a + (1 - decay) * w``, which does not even keep
    a constant weight bit-exact (``lerp`` does), and starts from the initial weights.

    Args:
        half_life_steps: the EMA's half-life in optimizer steps (> 0).
    """

    def __init__(self, half_life_steps: float = 70.0) -> None:
        if half_life_steps <= 0:
            raise ValueError(f"half_life_steps must be > 0, got {half_life_steps}")
        self.half_life_steps = half_life_steps
        self.decay = 0.5 ** (1.0 / half_life_steps)
        self.updates = 0
        self.last_step = 0
        self._average: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] | None = None  # the model's averaged tensors
        self._trained: dict[str, torch.Tensor] | None = None  # set aside when fitting ends

    @staticmethod
    def averaged_tensors(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """The module's tensors that are averaged, by state-dict name: the trainable parameters
        and the persistent floating-point buffers."""
        saved = pl_module.state_dict(keep_vars=True)
        tensors = {name: p for name, p in pl_module.named_parameters() if p.requires_grad}
        tensors.update(
            (name, b)
            for name, b in pl_module.named_buffers()
            if b.is_floating_point() and name in saved
        )
        return tensors

    @property
    def average(self) -> dict[str, torch.Tensor]:
        """The current average (name -> tensor); empty before fitting starts."""
        return dict(self._average or {})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """A new fit starts a new average (a resumed one then loads its own)."""
        if stage == TrainerFn.FITTING:
            self.updates, self.last_step = 0, 0
            self._average = self._live = self._trained = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        live = self.averaged_tensors(pl_module)
        if self._average is None:  # a fresh run, or one resumed from a checkpoint without it
            self._average = {name: t.detach().clone() for name, t in live.items()}
        elif self._average.keys() != live.keys():
            raise ValueError(
                "WeightEMA: the checkpoint averages other tensors than this model trains "
                f"({sorted(self._average.keys() ^ live.keys())[:5]} ...)"
            )
        else:
            self._average = {name: self._average[name].to(t.device) for name, t in live.items()}
        self._live = live

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._live is None or self._trained is not None:
            return
        if trainer.global_step <= self.last_step:
            return  # no optimizer step since the last update (gradient accumulation)
        weight = max(1.0 - self.decay, 1.0 / (self.updates + 1))
        with torch.no_grad():
            for name, live in self._live.items():
                self._average[name].lerp_(live, weight)
        self.updates += 1
        self.last_step = trainer.global_step

    def _swap(self) -> None:
        """Exchange the model's weights and the average (exact copies)."""
        for name, live in self._live.items():
            held = live.detach().clone()
            live.data.copy_(self._average[name])
            self._average[name].copy_(held)

    def _training(self) -> bool:
        """Whether the model holds the trained weights of a fit (not yet the average)."""
        return self._live is not None and self._trained is None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._training():
            self._swap()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._training():
            self._swap()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Leave the average in the model (later ``validate``/``test`` calls score it) and set
        the trained weights aside for checkpoints written from now on (``save_last``)."""
        if not self._training():
            return
        self._trained = {name: live.detach().clone() for name, live in self._live.items()}
        for name, live in self._live.items():
            live.data.copy_(self._average[name])

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "last_step": self.last_step,
            "half_life_steps": self.half_life_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
        self.last_step = int(state_dict["last_step"])

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._live is None:
            return  # no fit: the model holds what the checkpoint should (the average)
        weights = checkpoint["state_dict"]
        trained = self._trained or {name: weights[name] for name in self._live}
        checkpoint[TRAINING_WEIGHTS] = dict(trained)
        weights.update(self._average)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """On resuming a fit: the average from the checkpoint's ``state_dict`` (already loaded
        into the model), the trained weights back into the model."""
        if trainer.state.fn != TrainerFn.FITTING:
            return  # validate/test/predict score the checkpoint's state_dict: the average
        training = checkpoint.get(TRAINING_WEIGHTS)
        if training is None:
            logger.warning(
                "WeightEMA: the checkpoint holds no averaged weights (written without this "
                "callback); the average starts afresh from its weights"
            )
            return
        weights = checkpoint["state_dict"]
        device = pl_module.device
        self._average = {name: weights[name].detach().clone().to(device) for name in training}
        unexpected = pl_module.load_state_dict(training, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(
                f"WeightEMA: the checkpoint trains tensors not in this model: {unexpected}"
            )


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
