"""``clasp serve``: a local search page and JSON API over one index (see :mod:`clasp_pl.serve.app`)."""

from clasp_pl.serve.app import Limits, create_app
from clasp_pl.serve.engine import SearchEngine

__all__ = ["Limits", "SearchEngine", "create_app"]
