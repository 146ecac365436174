"""Lightning helpers for tests: a quiet CPU trainer and a minimal checkpoint writer (the package's own)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from clasp_pl.checkpoints import write_checkpoint


def quiet_trainer(max_epochs: int | None = None, max_steps: int = -1) -> L.Trainer:
    """CPU trainer without logging, checkpoints or per-epoch validation (saves test time)."""
    return L.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )


def save_lightning_checkpoint(module: L.LightningModule, path: Path) -> Path:
    """A minimal Lightning checkpoint (what ``load_from_checkpoint`` and ``init_from`` read)."""
    return write_checkpoint(path, module.state_dict(), dict(module.hparams))
