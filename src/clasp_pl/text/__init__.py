"""Text models, below both the data and the model layers.

- :mod:`~clasp_pl.text.sources`: where text models come from (names, folders, the offline
  default) and how they are loaded;
- :mod:`~clasp_pl.text.config`: :class:`~clasp_pl.text.config.TextConfig`, the text settings
  that the model and the data module share;
- :mod:`~clasp_pl.text.tokens`: texts -> token ids -> padded batches;
- :mod:`~clasp_pl.text.tower`: the text tower (encoder + pooling);
- :mod:`~clasp_pl.text.features`: a frozen tower's pooled outputs, cached by the data module.
"""
