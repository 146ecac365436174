"""Real 2-process gloo tests: DDP-averaged gradients of :class:`ContrastiveLoss` equal the
single-process gradients of the loss on the whole global batch, in global and local mode."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clasp_pl.losses import LOSS_KINDS, ContrastiveLoss, distributed_world_size, gather_batch
from helpers.ddp import free_port, run_ranks

pytestmark = pytest.mark.ddp

WORLD_SIZE = 2
LOCAL_BATCH = 4
IN_DIM, EMB_DIM = 6, 5
TOL = 1e-5
TIMEOUT_S = 120
GROUPS = {
    "distinct": [10, 11, 12, 13, 14, 15, 16, 17],
    "duplicates": [10, 11, 10, 12, 10, 13, 11, 12],  # groups 10, 11, 12 span both ranks
}
LOSS_KWARGS = {
    "infonce": {},
    "cosface": {"scale": 3.0, "margin": 0.5},
    "arcface": {"scale": 10.0, "margin": 0.5},
    "siglip": {"siglip_init_bias": -2.0},
}
LEARNED_LOSS_PARAMS = {
    "infonce": {"loss.logit_scale"},
    "cosface": set(),
    "arcface": set(),
    "siglip": {"loss.logit_scale", "loss.logit_bias"},
}
CASES = list(itertools.product(LOSS_KINDS, (False, True), GROUPS))


class TwoTower(nn.Module):
    """Two linear projections to L2-normalised ``[B, EMB_DIM]`` embeddings, plus the loss."""

    def __init__(self, kind: str, local_loss: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.crystal = nn.Linear(IN_DIM, EMB_DIM)
        self.text = nn.Linear(IN_DIM, EMB_DIM)
        self.loss = ContrastiveLoss(kind, local_loss=local_loss, **LOSS_KWARGS[kind])
        self.double()

    def forward(self, x_crystal: torch.Tensor, x_text: torch.Tensor, ids: torch.Tensor):
        crystal = F.normalize(self.crystal(x_crystal), dim=1)
        text = F.normalize(self.text(x_text), dim=1)
        return self.loss(crystal, text, ids)


def global_batch(groups: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed ``[8, IN_DIM]`` crystal/text inputs and ``[8]`` group ids."""
    gen = torch.Generator().manual_seed(1)
    x_crystal = torch.randn(WORLD_SIZE * LOCAL_BATCH, IN_DIM, generator=gen, dtype=torch.float64)
    x_text = torch.randn(WORLD_SIZE * LOCAL_BATCH, IN_DIM, generator=gen, dtype=torch.float64)
    return x_crystal, x_text, torch.tensor(GROUPS[groups], dtype=torch.int64)


def loss_and_grads(model: TwoTower, batch) -> tuple[float, dict[str, torch.Tensor]]:
    loss = model(*batch)
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: loss on its half of every case, backward, all-reduce-mean grads (as DDP)."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        results = {}
        for kind, local_loss, groups in CASES:
            model = TwoTower(kind, local_loss)
            batch = tuple(t[rows] for t in global_batch(groups))
            loss, grads = loss_and_grads(model, batch)
            for grad in grads.values():
                dist.all_reduce(grad)
                grad /= WORLD_SIZE
            results[(kind, local_loss, groups)] = (loss, grads)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Spawn the 2 ranks once for all cases; fail (not hang) after ``TIMEOUT_S``."""
    out_dir = tmp_path_factory.mktemp("ddp_losses")
    return run_ranks(_worker, WORLD_SIZE, out_dir, TIMEOUT_S)


@pytest.mark.parametrize(("kind", "local_loss", "groups"), CASES)
def test_ddp_matches_single_process(
    ddp_results: list[dict], kind: str, local_loss: bool, groups: str
) -> None:
    ref_loss, ref_grads = loss_and_grads(TwoTower(kind, local_loss), global_batch(groups))
    losses = [ddp_results[r][(kind, local_loss, groups)][0] for r in range(WORLD_SIZE)]
    if local_loss:
        assert abs(sum(losses) / WORLD_SIZE - ref_loss) < TOL
        assert abs(losses[0] - losses[1]) > TOL  # each rank really scored only its own rows
    else:
        assert max(abs(loss - ref_loss) for loss in losses) < TOL
    assert {n for n in ref_grads if n.startswith("loss.")} == LEARNED_LOSS_PARAMS[kind]
    for rank in range(WORLD_SIZE):
        grads = ddp_results[rank][(kind, local_loss, groups)][1]
        assert grads.keys() == ref_grads.keys()
        for name, ref in ref_grads.items():
            diff = (grads[name] - ref).abs().max().item()
            assert diff < TOL, f"rank {rank} {name}: max abs diff {diff:.3e}"


def test_world_size_one_process_group() -> None:
    """An initialised group of size 1 does not gather and gives the plain loss."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        assert distributed_world_size() == 1
        crystal = F.normalize(torch.randn(3, 4), dim=1)
        text = F.normalize(torch.randn(3, 4), dim=1)
        ids = torch.tensor([1, 1, 2])
        assert gather_batch(crystal, text, ids)[0] is crystal
        loss = ContrastiveLoss("infonce")
        expected = ContrastiveLoss("infonce", local_loss=True)(crystal, text, ids)
        torch.testing.assert_close(loss(crystal, text, ids), expected)
    finally:
        dist.destroy_process_group()
