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


def run_validation(devices: int, out_dir: str, chunk_size: int = 1024) -> None:
    """Validate fixed embeddings on ``devices`` processes; each rank writes what its callback
    holds, what it logged and how often it computed the metrics to ``out_dir/rank{r}.json``."""
    import clasp_pl.evaluation.callbacks as callbacks

    computed = []
    metrics_fn = callbacks.bidirectional_metrics
    callbacks.bidirectional_metrics = lambda *a, **k: computed.append(1) or metrics_fn(*a, **k)
    crystal, text, groups = fixed_data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(len(groups))), batch_size=4
    )
    callback = RetrievalMetrics(ks=(1, 5), chunk_size=chunk_size)
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
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    result = {
        "n": callback.last_num_items,
        "metrics": callback.last_metrics,
        "logged": logged,
        "computed": len(computed),
    }
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def expected_metrics() -> dict[str, float]:
    crystal, text, groups = fixed_data()
    return bidirectional_metrics(crystal, text, groups, (1, 5), chunk_size=len(groups))


def test_unique_by_item_drops_padding_duplicates():
    gathered = {"item_id": torch.tensor([3, 0, 1, 2, 3, 0]), "x": torch.arange(6)}
    unique = unique_by_item(gathered)
    assert unique["item_id"].tolist() == [0, 1, 2, 3]
    assert unique["x"].tolist() == [1, 2, 3, 0]


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_single_process_metrics_equal_the_unchunked_computation(tmp_path, chunk_size):
    run_validation(1, str(tmp_path), chunk_size)
    result = json.loads((tmp_path / "rank0.json").read_text())
    assert result["n"] == 13
    assert result["metrics"] == expected_metrics()  # exactly: chunks change no rank
    assert result["logged"] == pytest.approx({f"val/{k}": v for k, v in expected_metrics().items()})


@pytest.mark.ddp
def test_two_processes_compute_once_and_log_the_same_values_on_every_rank(tmp_path):
    """13 items on 2 ranks (DistributedSampler pads one rank with a repeated sample): every
    item counts once; rank 0 alone computes the metrics and both ranks log them."""
    script = tmp_path / "validate.py"  # Lightning's DDP launcher re-runs this script per rank
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_retrieval_callback import run_validation\n"
        f"run_validation(2, {str(tmp_path)!r}, chunk_size=3)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["computed"] for r in ranks] == [1, 0]
    for result in ranks:
        assert result["n"] == 13
        assert result["metrics"] == expected_metrics()
        assert result["logged"] == ranks[0]["logged"]
    assert ranks[0]["logged"] == pytest.approx(
        {f"val/{k}": v for k, v in expected_metrics().items()}
    )
