"""Text models, below both the data and the model layers.

- :mod:`~clasp_pl.text.sources`: where text models come from (names, folders, the offline
  default) and how they are loaded;
- :mod:`~clasp_pl.text.config`: :class:`~clasp_pl.text.config.TextConfig`, the text settings
  that the model and the data module share;
- :mod:`~clasp_pl.text.tokens`: texts -> token ids -> padded batches;
- :mod:`~clasp_pl.text.layers`: a BERT-family encoder run in two parts (lower, upper layers);
- :mod:`~clasp_pl.text.tower`: the text tower (encoder + pooling);
- :mod:`~clasp_pl.text.features`: what a tower's frozen part computes (a frozen tower's pooled
  outputs, a partly trainable one's lower hidden states), cached by the data module.
"""
