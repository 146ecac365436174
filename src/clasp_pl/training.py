"""Training infrastructure: crash-safe checkpoints, exactly resumable data order, run records.

- :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the target folder and
  renames it into place, so a crash or kill during a save leaves the previous file intact.
- :class:`EpochShuffleSampler` and :class:`ResumableDataLoader`: the training order is a function
  of ``(seed, epoch)`` only, sharded over ranks like ``DistributedSampler``, and the loader knows
  how far into its epoch it got.
- :class:`ResumeState` checkpoints that position and the RNG states and restores them when a run
  resumes (``--ckpt_path last``), so it continues exactly where the checkpoint was taken. Lightning
  2.6 only fast-forwards a stateful loader that it builds *after* restoring the loops; CLaSP's
  ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, which builds the training
  loader before the restore, so Lightning alone would restart the epoch from its first batch.
- :class:`StopAfterSteps` ends a fit early without changing the run's LR schedule (time-sliced jobs).
- :class:`RunRecorder` writes one JSON line per training step and rank (loss, LR, batch ids, the
  width of the cross-rank gathered batch the contrastive loss scored): smoke runs and tests.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.hooks import RemovableHandle

from clasp_pl.losses import gather_batch

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic: write ``<path>.<pid>.tmp``, fsync, rename.

    ``os.replace`` within one folder is atomic on POSIX filesystems, so readers (and a resumed run)
    see either the old complete checkpoint or the new complete one, never a truncated file. A
    temporary file orphaned by a killed writer is deleted by the next successful save of the same
    path (one writer per path is assumed: Lightning saves from global rank 0 only). Remote paths
    (``s3://`` etc.) fall back to the parent's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        for orphan in path.parent.glob(f"{glob.escape(path.name)}.*{TMP_SUFFIX}"):
            orphan.unlink(missing_ok=True)


def _is_local(path: str | Path) -> bool:
    return isinstance(get_filesystem(str(path)), LocalFileSystem)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every OS opens folders)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class EpochShuffleSampler(DistributedSampler):
    """Rank shard of a permutation that depends only on ``(seed, epoch)``; can start mid-epoch.

    A ``DistributedSampler`` (so Lightning keeps it instead of injecting its own under DDP) whose
    world size and rank come from the initialised process group, or are 1 and 0 without one. The
    tail that does not divide evenly over ranks is dropped, so every rank gets the same number of
    distinct samples. ``start`` skips that many of this rank's samples on the next pass only.

    Args:
        dataset: a sized dataset.
        seed: permutation seed; ``None`` takes ``seed_everything``'s seed (``PL_GLOBAL_SEED``) or 0.
        shuffle: permute (else keep dataset order).
    """

    def __init__(self, dataset: Dataset, seed: int | None = None, shuffle: bool = True) -> None:
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=shuffle,
            seed=seed,
            drop_last=True,
        )
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``; a pending ``start`` only applies to its own epoch."""
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return itertools.islice(super().__iter__(), start, None)


class ResumableDataLoader(DataLoader):
    """Training ``DataLoader`` over an :class:`EpochShuffleSampler` that can resume mid-epoch.

    Full batches only (``drop_last``). It implements Lightning's ``state_dict``/``load_state_dict``
    loader protocol: the state is ``{"epoch", "batches"}``, the batches already yielded in that
    epoch. Iteration is lazy (nothing is sampled or sent to workers before the first ``next``), so
    a position loaded after ``iter()`` but before the first batch still applies. The loader draws
    nothing from the global torch RNG (a plain ``DataLoader`` draws its workers' base seed from it
    at every ``iter()``, which would shift dropout masks after a resume): it has its own
    generator, reseeded from ``(seed, epoch)`` at every pass.

    Args:
        dataset: a sized map-style dataset.
        batch_size: samples per batch and rank.
        seed: shuffling seed (see :class:`EpochShuffleSampler`).
        shuffle: permute every epoch.
        **kwargs: other ``DataLoader`` arguments (``num_workers``, ``collate_fn``, ...).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int | None = None,
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        sampler = EpochShuffleSampler(dataset, seed=seed, shuffle=shuffle)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            generator=torch.Generator(),
            **kwargs,
        )
        self._position = (sampler.epoch, 0)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        epoch, done = self.sampler.epoch, self.sampler.start // self.batch_size
        self._position = (epoch, done)
        self.generator.manual_seed(self.sampler.seed + epoch)
        for batch in super().__iter__():
            done += 1
            self._position = (epoch, done)
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": n}``: ``n`` batches of epoch ``e`` were handed out."""
        epoch, batches = self._position
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass continue after ``state`` (the next epoch when it was complete)."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.start = batches * self.batch_size
        self._position = (epoch, batches)


def rng_states() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, in ``weights_only``-loadable types."""
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
        batch: Any,
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
