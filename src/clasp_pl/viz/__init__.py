"""Interactive embedding maps: every structure of an index on one offline HTML page.

:func:`write_embedding_map` (embeddings + points -> HTML) and :func:`index_map` (an index folder
-> HTML) are the entry points; see :mod:`clasp_pl.viz.embedding_map`.
"""

from clasp_pl.viz.embedding_map import index_map, write_embedding_map
from clasp_pl.viz.points import MapPoint, index_points, record_points

__all__ = ["MapPoint", "index_map", "index_points", "record_points", "write_embedding_map"]
