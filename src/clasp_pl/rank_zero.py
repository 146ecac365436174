"""Messages once per run: module loggers that speak on global rank 0 only.

Every process of a distributed run prepares and sets up the same data; a message that each of
them logged would appear once per rank. :func:`rank_zero_logger` is ``logging.getLogger(name)``
with a filter that drops records on every process but global rank 0 (the rank of Lightning's
``rank_zero_only``: read from the environment at import, then set by the strategy). The
``clasp`` command shows the package's INFO messages on stderr (see :mod:`clasp_pl.cli`).
"""

from __future__ import annotations

import logging

from lightning.pytorch.utilities.rank_zero import rank_zero_only


class _OnRankZero(logging.Filter):
    """Lets a record through on global rank 0 only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(rank_zero_only, "rank", 0) == 0


_ON_RANK_ZERO = _OnRankZero()


def rank_zero_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, silent on every process but global rank 0."""
    logger = logging.getLogger(name)
    if _ON_RANK_ZERO not in logger.filters:
        logger.addFilter(_ON_RANK_ZERO)
    return logger
