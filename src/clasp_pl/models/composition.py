"""Composition-only crystal tower: the baseline that sees no crystal graph."""

from __future__ import annotations

import torch
from torch import nn

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.composition import COMPOSITION_DIM, FRACTIONS

FRACTION_SCALE = 10.0
"""The element fractions are multiplied by this, so that a typical fraction (~0.1-0.5) is of the
order of the one-hot space group and the scaled scalars (~1)."""


def composition_features(batch: PairBatch, tower: str) -> torch.Tensor:
    """The batch's ``composition_features [B, 333]``.

    Raises:
        KeyError: the data module does not serve them, naming the setting that does.
    """
    if "composition_features" not in batch:
        raise KeyError(
            f"the {tower} crystal tower needs data.composition_features=true "
            f"(conf/model/{tower}.yaml sets it)"
        )
    return batch["composition_features"]


class CompositionFeatures(nn.Module):
    """The composition/symmetry descriptor itself, fractions scaled by :data:`FRACTION_SCALE`:
    ``[B, 333] -> [B, 333]``, no parameters.

    The crystal head (an MLP, ``heads.crystal_hidden``) does the learning, so the baseline of
    the issue's recipe, a 2-layer GELU MLP on the descriptor, is this tower with a head of one
    512-wide hidden layer; the text side, heads, loss and budget stay those of the run, and the
    comparison with CGCNN isolates what the graph adds.
    """

    out_dim = COMPOSITION_DIM

    def __init__(self) -> None:
        super().__init__()
        scale = torch.ones(COMPOSITION_DIM)
        scale[FRACTIONS] = FRACTION_SCALE
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """``batch["composition_features"] [B, 333]`` -> ``[B, 333]``."""
        return composition_features(batch, "composition") * self.scale
