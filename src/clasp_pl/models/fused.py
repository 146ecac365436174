"""Fused crystal tower: the CGCNN readout together with composition and symmetry.

The composition-only baseline shows how much the element fractions and the space group carry on
their own; CGCNN sees them only through local environments. This tower gives it both:

- **elements**: a learned embedding per element (Z = 1..100), pooled by the structure's
  occupancy-weighted element fractions, ``[B, 100] @ [100, element_dim]``;
- **symmetry**: a learned embedding of the space group plus one of its crystal system (a rare
  group still gets its system's vector), both with an "unknown" slot for a structure whose
  symmetry search failed (an all-zero one-hot);
- **scalars**: log(sites), volume per atom / 20 Å^3, density / 5 g/cm^3, as they are;
- **graph**: CGCNN's pooled output ``[B, h_fea_len]``.

They are concatenated and passed through one Linear-GELU-Dropout layer of width ``out_dim``; the
crystal head (``heads.crystal_hidden``) maps that to the embedding space. It reads the
composition descriptors of a pair batch (``data.composition_features: true``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.composition import (
    CRYSTAL_SYSTEM_FIRST_GROUP,
    FRACTIONS,
    N_SPACE_GROUPS,
    SCALARS,
    SPACE_GROUP,
)
from clasp_pl.data.graphs import CGCNN_MAX_Z, GraphConfig
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig
from clasp_pl.models.composition import composition_features

N_SCALARS = SCALARS.stop - SCALARS.start


@dataclass
class FusedConfig:
    """Sizes of the fused tower's composition/symmetry branch and of its fusion layer.

    Attributes:
        element_dim: width of the learned element embeddings.
        symmetry_dim: width of the space-group and crystal-system embeddings (summed).
        out_dim: width of the fusion layer (the tower's output width).
        dropout: dropout after the fusion layer's GELU.
    """

    element_dim: int = 64
    symmetry_dim: int = 32
    out_dim: int = 256
    dropout: float = 0.1


def space_group_numbers(one_hot: torch.Tensor) -> torch.Tensor:
    """``[B, 230]`` space-group one-hot -> ``[B]`` int64 numbers 1..230, 0 where all zero."""
    return torch.where(one_hot.any(dim=1), one_hot.argmax(dim=1) + 1, 0)


def crystal_system_indices(numbers: torch.Tensor) -> torch.Tensor:
    """``[B]`` space-group numbers (0 = unknown) -> ``[B]`` int64 crystal-system indices 1..7 in
    the order of :data:`clasp_pl.data.labels.CRYSTAL_SYSTEMS`, 0 for unknown."""
    first = torch.tensor(CRYSTAL_SYSTEM_FIRST_GROUP, device=numbers.device)
    return torch.bucketize(numbers, first, right=True)


class FusedCrystalTower(nn.Module):
    """Crystal graph + composition descriptor -> ``[B, out_dim]`` (see the module docstring)."""

    def __init__(self, crystal: CGCNNConfig, graph: GraphConfig, fused: FusedConfig):
        super().__init__()
        self.config = fused
        self.graph_tower = CGCNN(crystal, graph)
        self.element_embedding = nn.Linear(CGCNN_MAX_Z, fused.element_dim, bias=False)
        self.space_group_embedding = nn.Embedding(N_SPACE_GROUPS + 1, fused.symmetry_dim)
        self.crystal_system_embedding = nn.Embedding(
            len(CRYSTAL_SYSTEM_FIRST_GROUP) + 1, fused.symmetry_dim
        )
        width = self.graph_tower.out_dim + fused.element_dim + fused.symmetry_dim + N_SCALARS
        self.fusion = nn.Sequential(
            nn.Linear(width, fused.out_dim), nn.GELU(), nn.Dropout(fused.dropout)
        )

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def composition_branch(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``[B, 333]`` descriptors -> ``[B, element_dim + symmetry_dim + 3]``: pooled element
        embeddings, symmetry embedding, scalars."""
        numbers = space_group_numbers(descriptors[:, SPACE_GROUP])
        symmetry = self.space_group_embedding(numbers) + self.crystal_system_embedding(
            crystal_system_indices(numbers)
        )
        elements = self.element_embedding(descriptors[:, FRACTIONS])
        return torch.cat([elements, symmetry, descriptors[:, SCALARS]], dim=1)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """A pair batch's graphs and ``composition_features [B, 333]`` -> ``[B, out_dim]``."""
        descriptors = composition_features(batch, "fused")
        fused = torch.cat([self.graph_tower(batch), self.composition_branch(descriptors)], dim=1)
        return self.fusion(fused)
