"""Training data order that is a function of ``(seed, epoch)`` only, and resumable mid-epoch.

:class:`EpochShuffleSampler` shards that order over ranks like ``DistributedSampler``;
:class:`ResumableDataLoader` knows how far into its epoch it got and continues from there after a
resume (:class:`~clasp_pl.training.callbacks.ResumeState` checkpoints its position).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


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
