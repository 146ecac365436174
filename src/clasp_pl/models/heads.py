"""Projection heads: tower features -> the shared, L2-normalised embedding space; plain MLPs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Activation = Literal["relu", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_dims: Sequence[int] = (),
    batch_norm: bool = False,
    dropout: float = 0.0,
    activation: Activation = "relu",
) -> nn.Sequential:
    """``[B, in_dim] -> [B, out_dim]``: Linear(-BatchNorm)-activation(-Dropout) per hidden width,
    then Linear (``hidden_dims=()``: a single linear layer)."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_dims:
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """:func:`mlp` ``[B, in_dim] -> [B, embed_dim]``, L2-normalised.

    ``hidden_dims=()`` is a single linear projection (CLIP); ``hidden_dims=(768, 768)`` with
    ``batch_norm=True`` is the official CLaSP form (Linear-BN-ReLU twice, then Linear);
    ``hidden_dims=(512,)`` with ``activation="gelu"``, ``dropout=0.1`` the composition
    baseline's (Linear-GELU-Dropout-Linear).
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        hidden_dims: Sequence[int] = (),
        batch_norm: bool = False,
        dropout: float = 0.0,
        activation: Activation = "relu",
    ):
        super().__init__()
        self.mlp = mlp(in_dim, embed_dim, hidden_dims, batch_norm, dropout, activation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(features), dim=-1)
