"""The validation retrieval callback: metrics of the whole split, once, across ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from clasp_pl.evaluation.callbacks import RetrievalMetrics, unique_by_item
from clasp_pl.evaluation.metrics import bidirectional_metrics


class FixedEmbeddings(L.LightningModule):
    """Validation 'model' that returns fixed embeddings for dataset items (no training)."""

    def __init__(self, crystal, text, groups):
        super().__init__()
        self.crystal, self.text, self.groups = crystal, text, groups
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        idx = batch[0]
        return {
            "crystal_emb": self.crystal[idx],
            "text_emb": self.text[idx],
            "group_ids": self.groups[idx],
            "item_id": idx,
        }


def fixed_data(n=13, dim=8):
    generator = torch.Generator().manual_seed(0)
    crystal = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(
        crystal + 0.8 * torch.randn(n, dim, generator=generator), dim=-1
    )
    groups = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9])[:n]
    return crystal, text, groups


def run_validation(devices: int, out_file: str) -> None:
    crystal, text, groups = fixed_data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(len(groups))), batch_size=4
    )
    callback = RetrievalMetrics(ks=(1, 5))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.validate(FixedEmbeddings(crystal, text, groups), loader)
    if trainer.global_rank == 0:
        with open(out_file, "w") as handle:
            json.dump({"n": callback.last_num_items, "metrics": callback.last_metrics}, handle)


def test_unique_by_item_drops_padding_duplicates():
    gathered = {"item_id": torch.tensor([3, 0, 1, 2, 3, 0]), "x": torch.arange(6)}
    unique = unique_by_item(gathered)
    assert unique["item_id"].tolist() == [0, 1, 2, 3]
    assert unique["x"].tolist() == [1, 2, 3, 0]


def test_single_process_metrics_equal_direct_computation(tmp_path):
    out = tmp_path / "one.json"
    run_validation(1, str(out))
    result = json.loads(out.read_text())
    crystal, text, groups = fixed_data()
    assert result["n"] == 13
    assert result["metrics"] == pytest.approx(bidirectional_metrics(crystal, text, groups, (1, 5)))


@pytest.mark.ddp
def test_two_processes_with_uneven_split_count_every_item_once(tmp_path):
    """13 items on 2 ranks: DistributedSampler pads one rank with a repeated sample."""
    out = tmp_path / "two.json"
    script = tmp_path / "validate.py"  # Lightning's DDP launcher re-runs this script per rank
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_retrieval_callback import run_validation\n"
        f"run_validation(2, {str(out)!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    crystal, text, groups = fixed_data()
    assert result["n"] == 13
    assert result["metrics"] == pytest.approx(bidirectional_metrics(crystal, text, groups, (1, 5)))
