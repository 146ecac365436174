"""What the frozen part of a text tower computes, computed once so that training skips it:

- :class:`FrozenTextFeatures`: a fully frozen tower's pooled outputs, one ``[H]`` row per caption;
- :class:`FrozenLowerLayers`: a partly trainable tower's hidden states after its frozen lower
  layers, one ``[n_tokens, H]`` array per caption (the top layers then run on them).

Both run the tower in eval mode (no dropout) without gradients, in batches of similar length,
and each distinct token sequence once: the structures of one paper share its caption (about 1.8 per
paper in COD-like data), so a feature cache runs the tower on its distinct captions only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch

from clasp_pl.text.sources import resolve
from clasp_pl.text.tokens import length_sorted_batches, pad_token_ids
from clasp_pl.text.tower import TextTower

HiddenDtype = Literal["float32", "float16"]


class _FrozenPart:
    """The frozen part of a text tower run over token id sequences in padded batches.

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

    def _batches(
        self, token_ids: Sequence[np.ndarray], pad_token_id: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """``(rows, input_ids [b, L], attention_mask [b, L])`` batches covering every sequence."""
        for rows in length_sorted_batches(token_ids, self.batch_size):
            ids, mask = pad_token_ids([token_ids[row] for row in rows], pad_token_id)
            yield rows, torch.from_numpy(ids), torch.from_numpy(mask)


def distinct_sequences(token_ids: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct sequences of ``token_ids`` (first-seen order) and ``[N]`` int64 index of each
    input's among them: ``distinct[inverse[i]]`` equals ``token_ids[i]``."""
    first: dict[tuple[str, bytes], int] = {}
    inverse = np.empty(len(token_ids), np.int64)
    for row, ids in enumerate(token_ids):
        inverse[row] = first.setdefault((ids.dtype.str, ids.tobytes()), len(first))
    distinct: list[np.ndarray] = [np.empty(0)] * len(first)
    for row, ids in enumerate(token_ids):
        distinct[inverse[row]] = ids
    return distinct, inverse


class FrozenTextFeatures(_FrozenPart):
    """A frozen text tower as a function: token id sequences -> pooled outputs ``[N, H]``."""

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
        distinct, inverse = distinct_sequences(token_ids)
        features = np.zeros((len(distinct), self.tower.out_dim), np.float32)
        for rows, ids, mask in self._batches(distinct, pad_token_id):
            features[rows] = self.tower(ids, mask).float().numpy()
        return features[inverse]


class FrozenLowerLayers(_FrozenPart):
    """The frozen lower layers of a partly trainable text tower (``trainable_layers`` set) as a
    function: token id sequences -> hidden states ``[n_tokens, H]`` of each, after its layer
    ``frozen_layers`` (see :meth:`TextTower.lower_hidden`).

    Args:
        tower: the text tower (put in eval mode here).
        batch_size: sequences per forward pass.
        dtype: dtype of the returned states (float16 halves a cache; float32 keeps it exact).
    """

    def __init__(self, tower: TextTower, batch_size: int = 128, dtype: HiddenDtype = "float32"):
        super().__init__(tower, batch_size)
        self.dtype = dtype

    def identity(self) -> dict[str, str | int]:
        """What the states depend on besides the tokens (part of a cache's key): the resolved
        model, the layer they are taken after, the fingerprint of the weights below it, and
        the stored dtype."""
        return {
            "text_model": resolve(self.tower.text_model_name),
            "frozen_layers": self.tower.cut_layer(),
            "lower_weights": self.tower.lower_fingerprint(),
            "dtype": self.dtype,
        }

    @torch.no_grad()
    def __call__(self, token_ids: Sequence[np.ndarray], pad_token_id: int) -> list[np.ndarray]:
        """Hidden states ``[n_i, H]`` (``dtype``) of ``N`` unpadded token id sequences (``n_i``
        tokens each), in order."""
        distinct, inverse = distinct_sequences(token_ids)
        states: list[np.ndarray] = [np.empty(0)] * len(distinct)
        for rows, ids, mask in self._batches(distinct, pad_token_id):
            hidden = self.tower.lower_hidden(ids, mask).float().numpy().astype(self.dtype)
            for row, one in zip(rows, hidden, strict=True):
                states[row] = np.ascontiguousarray(one[: len(distinct[row])])
        return [states[i] for i in inverse]
