"""Frozen text features: a frozen tower's pooled outputs, computed once so training skips it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clasp_pl.text.sources import resolve
from clasp_pl.text.tokens import length_sorted_batches, pad_token_ids
from clasp_pl.text.tower import TextTower


class FrozenTextFeatures:
    """A frozen text tower as a function: token id sequences -> pooled outputs ``[N, H]``.

    The tower runs in eval mode (no dropout) without gradients, in batches of similar length.

    Args:
        tower: the text tower (put in eval mode here).
        batch_size: sequences per forward pass.
    """

    def __init__(self, tower: TextTower, batch_size: int = 128):
        self.tower = tower.eval()
        self.batch_size = batch_size

    @property
    def text_model_name(self) -> str:
        return self.tower.text_model_name

    def identity(self) -> dict[str, str]:
        """What the outputs depend on besides the tokens (part of a feature cache's key): the
        resolved model, the fingerprint of its weights and the pooling."""
        return {
            "text_model": resolve(self.tower.text_model_name),
            "weights": self.tower.weights_fingerprint(),
            "pooling": self.tower.pooling,
        }

    @torch.no_grad()
    def __call__(self, token_ids: Sequence[np.ndarray], pad_token_id: int) -> np.ndarray:
        """Pooled outputs ``[N, H]`` float32 of ``N`` unpadded token id sequences, in order."""
        features = np.zeros((len(token_ids), self.tower.out_dim), np.float32)
        for rows in length_sorted_batches(token_ids, self.batch_size):
            ids, mask = pad_token_ids([token_ids[row] for row in rows], pad_token_id)
            features[rows] = (
                self.tower(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
            )
        return features
