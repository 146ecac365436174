"""The tiny model's ``clasp fit`` command line, for tests that train a run in seconds."""

from __future__ import annotations

from helpers.data import REPO

TINY_CONFIGS = [
    "--config",
    str(REPO / "conf/trainer/cpu.yaml"),
    "--config",
    str(REPO / "conf/data/amcsd.yaml"),
    "--config",
    str(REPO / "conf/model/clasp.yaml"),
    "--config",
    str(REPO / "conf/model/tiny.yaml"),
]
"""The configs of a tiny-model run: the CPU trainer, the AMCSD data, the tiny CLaSP model."""
TINY_FIT = ["fit", *TINY_CONFIGS]
"""``clasp fit`` of the tiny model (add ``--data.records``, ``--trainer.max_epochs``...)."""
