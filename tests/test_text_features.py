"""The frozen text tower's cached outputs: every distinct caption runs through the tower once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clasp_pl.text.config import TextConfig
from clasp_pl.text.features import FrozenLowerLayers, FrozenTextFeatures, distinct_sequences
from clasp_pl.text.tower import TextTower


def sequences() -> list[np.ndarray]:
    """7 captions' token ids, 3 distinct (as the structures of one paper share its caption)."""
    a, b, c = (np.array(ids, np.int32) for ids in ([101, 7, 8, 102], [101, 9, 102], [101, 102]))
    return [a, b, a.copy(), c, b.copy(), a.copy(), c.copy()]


def rows_through_tower(tower: TextTower) -> list[int]:
    """Rows the tower's embedding layer sees, per forward (filled as the tower runs)."""
    seen: list[int] = []
    tower.encoder.embeddings.register_forward_hook(lambda _m, _i, out: seen.append(len(out)))
    return seen


def test_distinct_sequences_round_trip():
    distinct, inverse = distinct_sequences(sequences())
    assert len(distinct) == 3
    assert inverse.tolist() == [0, 1, 0, 2, 1, 0, 2]
    for ids, index in zip(sequences(), inverse, strict=True):
        assert np.array_equal(distinct[index], ids)


@pytest.mark.parametrize("part", ["pooled", "lower"])
def test_each_distinct_caption_runs_once_and_copies_get_its_output(part):
    torch.manual_seed(0)
    config = TextConfig(model="tiny-random", freeze=part == "pooled")
    if part == "lower":
        config = TextConfig(model="tiny-random", trainable_layers=1)
    tower = TextTower(config)
    frozen = FrozenTextFeatures(tower) if part == "pooled" else FrozenLowerLayers(tower)
    seen = rows_through_tower(tower)
    out = frozen(sequences(), pad_token_id=0)
    assert sum(seen) == 3
    alone = [frozen([ids], pad_token_id=0)[0] for ids in sequences()]
    assert len(out) == len(alone) == 7
    for got, want in zip(out, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
