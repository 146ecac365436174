"""Pretrained crystal tower: frozen CHGNet features, with or without the composition descriptor.

CHGNet's 64-d crystal feature (:mod:`clasp_pl.data.chgnet_features`) is computed once per
record and cached, so this tower has no graph network to run: it standardises the feature and,
``with_composition``, concatenates the composition/symmetry descriptor that the composition
tower reads (:class:`~clasp_pl.models.composition.CompositionFeatures`, ``[333]``); the crystal
head (``heads.crystal_hidden``) does the learning.

Standardisation: the 64 dimensions differ in scale by four orders of magnitude (standard
deviations from 0.01 to 92 over default records, measured), so a per-sample LayerNorm would be
ruled by a few dimensions. Each dimension is instead centred and scaled by its mean and variance
over the training batches: a ``BatchNorm1d`` without affine parameters and with a cumulative
average (``momentum=None``) of the batch statistics, so at the end of training its running
statistics are those of the training features, and evaluation and embedding apply that fixed
per-dimension scaling. It reads the batches' ``chgnet_features [B, 64]``
(``data.chgnet_features: true``), and with the composition their ``composition_features``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clasp_pl.data.batch import PairBatch
from clasp_pl.data.chgnet_features import CHGNET_DIM
from clasp_pl.models.composition import CompositionFeatures


@dataclass
class ChgnetTowerConfig:
    """The ``chgnet`` crystal tower's inputs.

    Attributes:
        with_composition: concatenate the composition/symmetry descriptor (``[333]``) to the
            standardised CHGNet feature (``false``: the CHGNet feature alone).
    """

    with_composition: bool = True


def chgnet_features(batch: PairBatch) -> torch.Tensor:
    """The batch's ``chgnet_features [B, 64]``.

    Raises:
        KeyError: the data module does not serve them, naming the setting that does.
    """
    if "chgnet_features" not in batch:
        raise KeyError(
            "the chgnet crystal tower needs data.chgnet_features=true "
            "(conf/model/chgnet.yaml sets it)"
        )
    return batch["chgnet_features"]


class ChgnetCrystalTower(nn.Module):
    """Frozen CHGNet feature (standardised) ``[B, 64]``, with the scaled composition descriptor
    ``[B, 333]`` when ``with_composition`` -> ``[B, out_dim]`` (64 or 397). Its only state is
    the per-dimension running statistics; no trainable parameters."""

    def __init__(self, config: ChgnetTowerConfig):
        super().__init__()
        self.config = config
        self.standardise = nn.BatchNorm1d(CHGNET_DIM, affine=False, momentum=None)
        self.composition = CompositionFeatures() if config.with_composition else None
        self.out_dim = CHGNET_DIM + (self.composition.out_dim if self.composition else 0)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """A pair batch's ``chgnet_features`` (and ``composition_features``) -> ``[B, out_dim]``."""
        features = self.standardise(chgnet_features(batch))
        if self.composition is None:
            return features
        return torch.cat([features, self.composition(batch)], dim=1)
