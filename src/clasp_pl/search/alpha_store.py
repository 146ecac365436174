"""The ``alpha`` of a checkpoint's hybrid score, stored beside the checkpoint file.

``clasp eval`` chooses ``alpha`` on the validation split (:mod:`clasp_pl.evaluation.hybrid`)
and stores it one file per checkpoint (``last.ckpt`` -> ``last.ckpt.alpha.json``) with the
checkpoint's sha256 prefix (:func:`save_alpha`); ``clasp search`` reads it back
(:func:`load_alpha`) only for that same checkpoint file, so a checkpoint overwritten since
(``last.ckpt``) gets the default.
"""

from __future__ import annotations

import json
from pathlib import Path

from clasp_pl.search.index import checkpoint_sha256

DEFAULT_ALPHA = 0.1
ALPHA_SUFFIX = ".alpha.json"


def alpha_path(ckpt: str | Path) -> Path:
    """Where the checkpoint's alpha is stored: ``<checkpoint file name>.alpha.json`` beside it."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + ALPHA_SUFFIX)


def save_alpha(ckpt: str | Path, alpha: float, recall: dict[float, float]) -> Path:
    """Write :func:`alpha_path`: the chosen value, text→structure group R@10 per candidate and
    the checkpoint's sha256 prefix; returns the path."""
    path = alpha_path(ckpt)
    payload = {
        "alpha": alpha,
        "metric": "t2s_group_R@10",
        "grid": {str(a): r for a, r in recall.items()},
        "checkpoint_sha256": checkpoint_sha256(ckpt),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def load_alpha(ckpt: str | Path) -> tuple[float, str]:
    """``(alpha, where it came from)``: the value stored for this checkpoint file
    (:func:`save_alpha`), else the default :data:`DEFAULT_ALPHA` when there is none or it was
    chosen for another version of the file (the sha256 differs)."""
    path = alpha_path(ckpt)
    if not path.is_file():
        return DEFAULT_ALPHA, f"default (no {path.name} next to the checkpoint)"
    stored = json.loads(path.read_text())
    if stored.get("checkpoint_sha256") != checkpoint_sha256(ckpt):
        return DEFAULT_ALPHA, f"default ({path.name} was chosen for another version of the file)"
    return float(stored["alpha"]), f"stored with the model ({path})"
