"""Atom-budget batches: within budget, equal pairs per rank in a step, the same steps in every
epoch, every item once per epoch, deterministic and resumable, and exact under 2-process DDP."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.loading import AtomBudgetBatchSampler, ResumableDataLoader
from clasp_pl.data.records import write_records
from clasp_pl.losses import ContrastiveLoss
from clasp_pl.text.config import TextConfig
from helpers.data import TINY_GRAPH, first_records
from helpers.ddp import run_ranks

BUDGET = 60
MAX_BATCH = 6


def skewed_sites(n: int, seed: int = 0) -> np.ndarray:
    """``[n]`` site counts like COD's: mostly small, a long tail, a few above ``BUDGET / 2``."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(1.8, 0.8, n)), 1, 40).astype(np.int64)


def sampler(sites: np.ndarray, rank: int = 0, world: int = 2, seed: int = 3):
    return AtomBudgetBatchSampler(
        range(len(sites)), sites, BUDGET, MAX_BATCH, seed=seed, num_replicas=world, rank=rank
    )


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batches_are_within_budget_equal_per_rank_and_cover_every_item_once(world: int) -> None:
    sites = skewed_sites(203)
    ranks = [sampler(sites, rank, world) for rank in range(world)]
    lengths = {len(s) for s in ranks}
    assert len(lengths) == 1  # every rank steps as often: no rank waits on a collective
    for epoch in range(6):
        batches = []
        for s in ranks:
            s.set_epoch(epoch)
            batches.append(list(s))
        assert all(len(b) == len(s) for b, s in zip(batches, ranks, strict=True))  # same steps
        for step in zip(*batches, strict=True):
            assert len({len(batch) for batch in step}) == 1  # equal local batch sizes
            assert all(1 <= len(batch) <= MAX_BATCH for batch in step)
            assert all(sites[batch].sum() <= BUDGET for batch in step)
        seen = np.concatenate([np.concatenate(b) for b in batches])
        assert len(seen) == len(set(seen.tolist()))  # nothing twice
        assert len(seen) + ranks[0].dropped >= len(sites) - (world - 1)  # only the tail, or logged


def test_the_plan_is_a_function_of_seed_and_epoch() -> None:
    sites = skewed_sites(120)
    first = sampler(sites).plan(1)
    again = sampler(sites).plan(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other_epoch = np.concatenate(sampler(sites).plan(2))
    other_seed = np.concatenate(sampler(sites, seed=4).plan(1))
    assert not np.array_equal(np.concatenate(first), other_epoch)
    assert not np.array_equal(np.concatenate(first), other_seed)


def test_every_epoch_is_cut_to_the_same_length_by_splitting_or_folding_steps() -> None:
    """Over many epochs, some need fewer steps (split) and some more (folded into room);
    each keeps ``len(sampler)`` steps within budget and loses no item it could place."""
    sites = skewed_sites(400, seed=1)
    s = sampler(sites, world=2)
    needs = [len(s._greedy_steps(s._rounds(e))) for e in range(40)]
    assert min(needs) < len(s) < max(needs)  # both paths are exercised
    for epoch in range(40):
        plan = s.plan(epoch)
        assert len(plan) == len(s)
        assert all(sites[step].sum(axis=0).max() <= BUDGET for step in plan)
        placed = sum(step.size for step in plan)
        assert placed + s.dropped == len(sites)


def test_an_item_above_the_budget_is_a_batch_of_its_own(caplog) -> None:
    sites = np.array([3, 3, 90, 3, 3, 3])
    s = AtomBudgetBatchSampler(range(6), sites, BUDGET, MAX_BATCH, shuffle=False, num_replicas=1)
    assert "1 structures have more than the budget" in caplog.text
    assert list(s) == [[0, 1], [2], [3, 4, 5]]


class SiteDataset(torch.utils.data.Dataset):
    """Item ``i`` has ``sites[i]`` sites, each a ``[4]`` feature row, and a ``[4]`` text row."""

    def __init__(self, sites: np.ndarray) -> None:
        self.sites = sites
        rng = np.random.default_rng(7)
        self.atoms = [rng.normal(size=(n, 4)) for n in sites]
        self.texts = rng.normal(size=(len(sites), 4))
        self.groups = np.arange(len(sites)) // 3  # three items per paper: positives across ranks

    def __len__(self) -> int:
        return len(self.sites)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"atoms": self.atoms[i], "text": self.texts[i], "group": self.groups[i : i + 1]}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    atoms = [torch.from_numpy(s["atoms"]) for s in samples]
    return {
        "atoms": torch.cat(atoms),
        "crystal": torch.repeat_interleave(
            torch.arange(len(atoms)), torch.tensor([len(a) for a in atoms])
        ),
        "text": torch.from_numpy(np.stack([s["text"] for s in samples])),
        "group": torch.from_numpy(np.concatenate([s["group"] for s in samples])),
    }


def test_loader_resumes_mid_epoch_with_the_batches_it_would_have_given() -> None:
    dataset = SiteDataset(skewed_sites(90))

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(
            dataset, MAX_BATCH, seed=5, atom_budget=BUDGET, sites=dataset.sites, collate_fn=collate
        )

    straight = loader()
    straight.sampler.set_epoch(1)
    expected = [batch["group"].tolist() for batch in straight]
    first = loader()
    first.sampler.set_epoch(1)
    head = [batch["group"].tolist() for _, batch in zip(range(3), first, strict=False)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [batch["group"].tolist() for batch in resumed] == expected
    resumed.load_state_dict({"epoch": 1, "batches": len(resumed)})  # a finished epoch rolls over
    assert resumed.sampler.epoch == 2


def test_the_data_module_packs_training_batches_of_real_structures(tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl.gz"
    write_records(first_records(40), records)
    dm = CrystalTextDataModule(
        records=str(records),
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(model="tiny-random"),
        graph=TINY_GRAPH,
        split_fractions=(1.0, 0.0, 0.0),
        batch_size=16,
        atom_budget=BUDGET,
    )
    dm.prepare_data()
    dm.setup("fit")
    sites = dm.datasets["train"].site_counts()
    assert sites.max() <= BUDGET < sites.sum()
    batches = list(dm.train_dataloader())
    assert len(batches) > 1
    for batch in batches:
        assert len(batch["crystal_index"]) <= BUDGET
        assert batch["num_crystals"] <= 16
    assert sum(batch["num_crystals"] for batch in batches) == len(sites)  # one rank: all of them


# --------------------------------------------------------------------- exactness under DDP
WORLD = 2
DDP_TIMEOUT_S = 120
TOL = 1e-10


class SiteTwoTower(nn.Module):
    """Mean-pooled per-site projection (crystal) and a projection (text), then the loss."""

    def __init__(self, local_loss: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.site = nn.Linear(4, 5)
        self.text = nn.Linear(4, 5)
        self.loss = ContrastiveLoss("infonce", local_loss=local_loss)
        self.double()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        per_site = self.site(batch["atoms"])
        count = int(batch["crystal"].max()) + 1
        pooled = torch.zeros(count, 5, dtype=per_site.dtype).index_add(
            0, batch["crystal"], per_site
        )
        pooled = pooled / torch.bincount(batch["crystal"], minlength=count)[:, None]
        crystal = F.normalize(pooled, dim=1)
        text = F.normalize(self.text(batch["text"]), dim=1)
        return self.loss(crystal, text, batch["group"])


def loss_and_grads(model: nn.Module, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(batch)
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _ddp_rank(rank: int, port: int, out_dir: str) -> None:
    """One rank: a real DDP-wrapped model over its atom-budget batches of one epoch."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        dataset = SiteDataset(skewed_sites(70))
        results = {}
        for local_loss in (False, True):
            loader = ResumableDataLoader(
                dataset,
                MAX_BATCH,
                seed=2,
                atom_budget=BUDGET,
                sites=dataset.sites,
                collate_fn=collate,
            )
            model = DistributedDataParallel(SiteTwoTower(local_loss))
            steps = []
            for batch in loader:
                loss, grads = loss_and_grads(model, batch)  # DDP averages the gradients
                steps.append((loss, {n.removeprefix("module."): g for n, g in grads.items()}))
            results[local_loss] = steps
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Spawn the two gloo ranks once; fail (not hang) after ``DDP_TIMEOUT_S``."""
    out_dir = tmp_path_factory.mktemp("atom_budget_ddp")
    return run_ranks(_ddp_rank, WORLD, out_dir, DDP_TIMEOUT_S)


@pytest.mark.ddp
@pytest.mark.parametrize("local_loss", [False, True])
def test_two_rank_ddp_equals_one_process_over_each_global_batch(
    ddp_steps: list[dict], local_loss: bool
) -> None:
    ranks = [ddp_steps[r][local_loss] for r in range(WORLD)]
    dataset = SiteDataset(skewed_sites(70))
    plan = sampler(dataset.sites, seed=2).plan(0)
    assert len(ranks[0]) == len(ranks[1]) == len(plan) > 1
    reference = SiteTwoTower(local_loss)
    for step, positions in enumerate(plan):
        global_batch = collate([dataset[int(i)] for i in positions.T.reshape(-1)])  # rank order
        ref_loss, ref_grads = loss_and_grads(reference, global_batch)
        losses = [ranks[r][step][0] for r in range(WORLD)]
        if local_loss:
            assert abs(sum(losses) / WORLD - ref_loss) < TOL
        else:
            assert max(abs(loss - ref_loss) for loss in losses) < TOL
        for r in range(WORLD):
            for name, ref in ref_grads.items():
                diff = (ranks[r][step][1][name] - ref).abs().max().item()
                assert diff < TOL, f"step {step} rank {r} {name}: {diff:.2e}"


def test_lightning_trains_two_epochs_on_atom_budget_batches(
    tmp_path: Path, records_file: Path, monkeypatch, one_torch_thread
) -> None:
    """``clasp fit`` on the tiny config with ``--data.atom_budget``: Lightning keeps the loader
    (no sampler injected), every epoch has ``len(loader)`` steps and ends in validation, and each
    batch is within budget."""
    from unittest.mock import patch

    from lightning.pytorch.callbacks import Callback

    from clasp_pl.commands.fit import CLaSPCLI
    from clasp_pl.models.clasp import CLaSPModule
    from helpers.data import REPO

    class Sites(Callback):
        def __init__(self) -> None:
            self.sites: list[int] = []
            self.steps_per_epoch: list[int] = []
            self.validations = 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.sites.append(len(batch["crystal_index"]))

        def on_train_epoch_end(self, trainer, module) -> None:
            self.steps_per_epoch.append(len(self.sites) - sum(self.steps_per_epoch))

        def on_validation_epoch_end(self, trainer, module) -> None:
            self.validations += not trainer.sanity_checking

    monkeypatch.chdir(tmp_path)
    configs = ["trainer/cpu.yaml", "data/amcsd.yaml", "model/clasp.yaml", "model/tiny.yaml"]
    args = [arg for name in configs for arg in ("--config", str(REPO / "conf" / name))]
    args += ["--data.records", str(records_file), "--data.cache_dir", str(tmp_path / "cache")]
    args += ["--data.atom_budget", "200", "--data.batch_size", "16", "--trainer.max_epochs", "2"]
    args += ["--data.split_fractions", "[0.7, 0.15, 0.15]"]
    with patch.object(sys, "argv", ["clasp"]):
        cli = CLaSPCLI(CLaSPModule, CrystalTextDataModule, args=args, run=False)
    sites = Sites()
    cli.trainer.callbacks.append(sites)
    cli.trainer.fit(cli.model, cli.datamodule)
    loader = cli.trainer.train_dataloader
    assert isinstance(loader.sampler, AtomBudgetBatchSampler)
    assert sites.steps_per_epoch == [len(loader), len(loader)]
    assert sites.validations == 2  # the epoch length Lightning fixed is each epoch's
    assert max(sites.sites) <= 200
    assert cli.trainer.global_step == 2 * len(loader)
