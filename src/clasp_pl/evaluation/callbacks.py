"""Retrieval metrics of the whole validation/test split, logged once per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from clasp_pl.evaluation.metrics import bidirectional_metrics

EMBEDDING_KEYS = ("crystal_emb", "text_emb", "group_ids", "item_id")


def unique_by_item(gathered: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop repeated ``item_id`` rows (DistributedSampler pads ranks by repeating samples),
    keeping each item once, ordered by item id."""
    item_id = gathered["item_id"]
    unique_ids, inverse = torch.unique(item_id, return_inverse=True)
    first = torch.full_like(unique_ids, item_id.numel()).scatter_reduce(
        0, inverse, torch.arange(item_id.numel(), device=item_id.device), reduce="amin"
    )
    return {name: value[first] for name, value in gathered.items()}


class RetrievalMetrics(L.Callback):
    """Collects the embeddings that ``validation_step``/``test_step`` return, gathers them from
    all ranks, removes sampler padding duplicates and logs text→structure and structure→text
    Recall@k, mean/median rank and MRR (pair and group hits) as ``val/t2s_pair_R@10`` etc.

    The metrics are computed once, on global rank 0, and broadcast: every rank logs the same
    values (so a ``ModelCheckpoint`` monitoring one of them agrees on every rank) while the other
    ranks spend neither the time nor the ``O(chunk_size x N)`` scores on them.

    Args:
        ks: Recall@k cut-offs.
        chunk_size: queries scored at once (peak memory ``O(chunk_size x N)``, N the split's
            pairs; the ``N x N`` score matrix is never held).
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024):
        super().__init__()
        self.ks = tuple(ks)
        self.chunk_size = chunk_size
        self._outputs: list[dict[str, torch.Tensor]] = []
        self.last_metrics: dict[str, float] = {}
        self.last_num_items = 0

    def _collect(self, outputs: dict) -> None:
        self._outputs.append({key: outputs[key].detach() for key in EMBEDDING_KEYS})

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self._outputs:
            return
        local = {key: torch.cat([o[key] for o in self._outputs]) for key in EMBEDDING_KEYS}
        self._outputs = []
        gathered = {key: _gather_rows(pl_module, value) for key, value in local.items()}
        result = None
        if trainer.global_rank == 0:
            items = unique_by_item(gathered)
            metrics = bidirectional_metrics(
                items["crystal_emb"].float(),
                items["text_emb"].float(),
                items["group_ids"],
                self.ks,
                self.chunk_size,
            )
            result = (metrics, int(items["item_id"].numel()))
        metrics, self.last_num_items = trainer.strategy.broadcast(result, src=0)
        self.last_metrics = metrics
        for name, value in metrics.items():
            pl_module.log(f"{stage}/{name}", value, rank_zero_only=False, sync_dist=False)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._collect(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(outputs)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")
        self._outputs = []

    def on_test_epoch_end(self, trainer, pl_module):
        self._finish(trainer, pl_module, "test")


def _gather_rows(pl_module: L.LightningModule, value: torch.Tensor) -> torch.Tensor:
    """Concatenate ``value [n_local, ...]`` from all ranks (ranks may hold different counts)."""
    if pl_module.trainer.world_size == 1:
        return value
    count = torch.tensor([value.shape[0]], device=value.device)
    counts = pl_module.all_gather(count).flatten()
    padded = value.new_zeros((int(counts.max()), *value.shape[1:]))
    padded[: value.shape[0]] = value
    everything = pl_module.all_gather(padded)  # [world, max_count, ...]
    return torch.cat([everything[rank, : int(n)] for rank, n in enumerate(counts)])
