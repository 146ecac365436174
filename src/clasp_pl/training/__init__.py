"""Training infrastructure around the LightningModules, one job per module.

- :mod:`~clasp_pl.training.checkpoint_io`: crash-safe (atomic) checkpoint writes;
- :mod:`~clasp_pl.training.rng`: the Python, NumPy and torch RNG states as checkpointable values;
- :mod:`~clasp_pl.training.callbacks`: exact resume (loader position + RNG states), stopping
  after a step count without changing the LR schedule, and per-step run records.

The resumable training loader itself is data loading: :mod:`clasp_pl.data.loading`.
"""
