"""Composition-only crystal tower: the baseline that sees no crystal graph."""

from __future__ import annotations

import torch
from torch import nn

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.composition import COMPOSITION_DIM


class CompositionMLP(nn.Module):
    """MLP on composition/symmetry descriptors, ``[B, 333] -> [B, out_dim]``.

    Same output width as the CGCNN tower it replaces, so the heads, loss and training budget are
    identical and the comparison isolates what the graph adds.
    """

    def __init__(self, out_dim: int, hidden: int = 256):
        super().__init__()
        self.out_dim = out_dim
        self.mlp = nn.Sequential(
            nn.Linear(COMPOSITION_DIM, hidden),
            nn.Softplus(),
            nn.Linear(hidden, out_dim),
            nn.Softplus(),
        )

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """``batch["composition_features"] [B, 333]`` -> ``[B, out_dim]``."""
        if "composition_features" not in batch:
            raise KeyError(
                "the composition-only tower needs data.composition_features=true "
                "(conf/model/composition.yaml sets it)"
            )
        return self.mlp(batch["composition_features"])
