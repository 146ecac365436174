"""Training data order that is a function of ``(seed, epoch)`` only, and resumable mid-epoch.

:class:`EpochShuffleSampler` shards that order over ranks like ``DistributedSampler``;
:class:`AtomBudgetBatchSampler` packs it into batches of at most a budget of sites instead of a
fixed count; :class:`ResumableDataLoader` knows how far into its epoch it got and continues from
there after a resume (:class:`~clasp_pl.training.callbacks.ResumeState` checkpoints its position).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from clasp_pl.rank_zero import rank_zero_logger

log = rank_zero_logger(__name__)
REFERENCE_EPOCHS = 4  # an atom-budget epoch has as many batches as the most of its first epochs


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
        num_replicas: ranks; ``None`` takes the process group's world size (1 without one).
        rank: this rank; ``None`` takes the process group's (0 without one).
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int | None = None,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if seed is None:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
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


class AtomBudgetBatchSampler(EpochShuffleSampler):
    """Whole batches of at most ``budget`` sites per rank, the same number of pairs on every rank
    in a step, and the same number of steps in every epoch.

    The ``(seed, epoch)`` permutation of :class:`EpochShuffleSampler` is cut into *rounds* of
    ``num_replicas`` consecutive items, item ``r`` of a round going to rank ``r`` (the tail of
    fewer than ``num_replicas`` items is dropped, as there). A step is a run of consecutive
    rounds, as long as every rank's share stays within ``budget`` sites and ``max_batch_size``
    pairs (greedy, so the fewest steps that keep this order). Every rank thus holds the same number
    of pairs in a step, as the all-gather loss needs, and computes the same plan from the site
    counts alone, so no rank waits on another.

    Lightning fixes an epoch's length when training starts, so every epoch has ``len(self)``
    steps: the most that any of the first ``REFERENCE_EPOCHS`` epochs needs. An epoch that needs
    fewer has its longest steps halved (smaller batches, still within budget); one that needs more
    moves the rounds that do not fit into the first step with room for them, and drops those that
    fit nowhere (counted in :attr:`dropped` and logged). A structure with more sites than
    ``budget`` forms a round of its own and is the one case above budget.

    Iteration yields this rank's batch, a list of dataset positions; ``start`` is in batches.

    Args:
        dataset: a sized dataset.
        sites: ``[len(dataset)]`` site count of each item (its memory footprint).
        budget: most sites in one rank's batch.
        max_batch_size: most pairs in one rank's batch.
        seed, shuffle, num_replicas, rank: as for :class:`EpochShuffleSampler`.
    """

    def __init__(
        self,
        dataset: Dataset,
        sites: np.ndarray,
        budget: int,
        max_batch_size: int,
        seed: int | None = None,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(dataset, seed, shuffle, num_replicas, rank)
        self.sites = np.asarray(sites, dtype=np.int64)
        if self.sites.shape != (len(dataset),):
            raise ValueError(f"sites has shape {self.sites.shape}; expected ({len(dataset)},)")
        if budget < 1 or max_batch_size < 1:
            raise ValueError(
                f"budget and max_batch_size must be positive: {budget}, {max_batch_size}"
            )
        self.budget, self.max_batch_size = budget, max_batch_size
        self.dropped = 0
        self._plan: tuple[int, list[np.ndarray]] | None = None
        over = int((self.sites > budget).sum())
        if over:
            log.warning("%d structures have more than the budget of %d sites", over, budget)
        counts = [len(self._greedy_steps(self._rounds(epoch))) for epoch in range(REFERENCE_EPOCHS)]
        self.num_batches = max(counts)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        for step in self.plan(self.epoch)[start:]:
            yield step[:, self.rank].tolist()

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The ``len(self)`` steps of ``epoch``: ``[pairs per rank, num_replicas]`` int64 dataset
        positions each (column ``r`` is rank ``r``'s batch)."""
        if self._plan is None or self._plan[0] != epoch:
            rounds = self._rounds(epoch)
            steps = self._greedy_steps(rounds)
            self.dropped = 0
            if len(steps) < self.num_batches:
                steps = self._split(steps)
            elif len(steps) > self.num_batches:
                steps = self._fold(steps, epoch)
            self._plan = (epoch, steps)
        return self._plan[1]

    def _rounds(self, epoch: int) -> np.ndarray:
        """``[n // W, W]`` dataset positions: the epoch's permutation, ``W`` items a round."""
        n, width = len(self.sites), self.num_replicas
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator).numpy()
        else:
            order = np.arange(n)
        return order[: n // width * width].reshape(-1, width)

    def _greedy_steps(self, rounds: np.ndarray) -> list[np.ndarray]:
        """Cut ``rounds`` into the fewest runs of consecutive rounds within budget."""
        sizes = np.cumsum(self.sites[rounds], axis=0)  # [R, W] sites up to and with each round
        sizes = np.vstack([np.zeros((1, rounds.shape[1]), np.int64), sizes])
        steps, first = [], 0
        while first < len(rounds):
            limits = sizes[first] + self.budget
            fits = min(
                int(np.searchsorted(sizes[:, r], limits[r], side="right")) - 1
                for r in range(rounds.shape[1])
            )
            end = max(first + 1, min(fits, first + self.max_batch_size, len(rounds)))
            steps.append(rounds[first:end])
            first = end
        return steps

    def _split(self, steps: list[np.ndarray]) -> list[np.ndarray]:
        """Halve the longest steps until there are ``len(self)``."""
        steps = list(steps)
        while len(steps) < self.num_batches:
            longest = max(range(len(steps)), key=lambda i: len(steps[i]))
            step = steps[longest]
            half = len(step) // 2
            steps[longest : longest + 1] = [step[:half], step[half:]]
        return steps

    def _fold(self, steps: list[np.ndarray], epoch: int) -> list[np.ndarray]:
        """Keep ``len(self)`` steps; move each round of the others into the first with room."""
        kept, extra = steps[: self.num_batches], steps[self.num_batches :]
        loads = np.array([self.sites[step].sum(axis=0) for step in kept]).reshape(len(kept), -1)
        lengths = np.array([len(step) for step in kept])
        for round_ in (r for step in extra for r in step):
            room = ((loads + self.sites[round_] <= self.budget).all(axis=1)) & (
                lengths < self.max_batch_size
            )
            if not room.any():
                self.dropped += len(round_)
                continue
            target = int(np.argmax(room))
            kept[target] = np.vstack([kept[target], round_[None]])
            loads[target] += self.sites[round_]
            lengths[target] += 1
        if self.dropped:
            log.info("atom budget: %d items fit in no batch of epoch %d", self.dropped, self.epoch)
        return kept


class _BatchFetch(Dataset):
    """``dataset[positions]`` as a list of samples, for a sampler that yields whole batches."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, positions: list[int]) -> list[Any]:
        return [self.dataset[position] for position in positions]


class ResumableDataLoader(DataLoader):
    """Training ``DataLoader`` over an :class:`EpochShuffleSampler` that can resume mid-epoch.

    Full batches only (``drop_last``). It implements Lightning's ``state_dict``/``load_state_dict``
    loader protocol: the state is ``{"epoch", "batches"}``, the batches already yielded in that
    epoch. Iteration is lazy (nothing is sampled or sent to workers before the first ``next``), so
    a position loaded after ``iter()`` but before the first batch still applies. The loader draws
    nothing from the global torch RNG (a plain ``DataLoader`` draws its workers' base seed from it
    at every ``iter()``, which would shift dropout masks after a resume): it has its own
    generator, reseeded from ``(seed, epoch)`` at every pass.

    With ``atom_budget``, batches come from an :class:`AtomBudgetBatchSampler` instead (at most
    ``atom_budget`` sites and ``batch_size`` samples per batch and rank); the loader then fetches
    whole batches (``batch_size`` is ``None`` on it, the sampler holds the cap).

    Args:
        dataset: a sized map-style dataset.
        batch_size: samples per batch and rank (the most, with ``atom_budget``).
        seed: shuffling seed (see :class:`EpochShuffleSampler`).
        shuffle: permute every epoch.
        atom_budget: most sites per batch and rank; ``None`` for batches of ``batch_size``.
        sites: ``[len(dataset)]`` site count of each sample (needed with ``atom_budget``).
        **kwargs: other ``DataLoader`` arguments (``num_workers``, ``collate_fn``, ...).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int | None = None,
        shuffle: bool = True,
        atom_budget: int | None = None,
        sites: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        sampler: EpochShuffleSampler
        if atom_budget is None:
            sampler = EpochShuffleSampler(dataset, seed=seed, shuffle=shuffle)
            super().__init__(
                dataset,
                batch_size=batch_size,
                sampler=sampler,
                drop_last=True,
                generator=torch.Generator(),
                **kwargs,
            )
            self._samples_per_batch = batch_size
        else:
            if sites is None:
                raise ValueError("atom_budget needs the site count of each sample (sites)")
            sampler = AtomBudgetBatchSampler(dataset, sites, atom_budget, batch_size, seed, shuffle)
            super().__init__(
                _BatchFetch(dataset),
                batch_size=None,
                sampler=sampler,
                generator=torch.Generator(),
                **kwargs,
            )
            self._samples_per_batch = 1  # the sampler's unit is a batch
        self._position = (sampler.epoch, 0)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        epoch, done = self.sampler.epoch, self.sampler.start // self._samples_per_batch
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
        self.sampler.start = batches * self._samples_per_batch
        self._position = (epoch, batches)
