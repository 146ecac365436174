"""Build an embedding map: coordinates (cached), colours, query marks -> one HTML file.

:func:`write_embedding_map` is the entry point for code that holds embeddings and their points
(``clasp eval`` writes one beside its PNGs); :func:`index_map` maps an index folder, with colours
and marks from free-text queries scored by the index's own model (``clasp map``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clasp_pl.api import load_model
from clasp_pl.search.alpha_store import load_alpha
from clasp_pl.search.index import EmbeddingIndex
from clasp_pl.viz.colouring import FIELDS, Colouring, colour_by_field, colour_by_scores
from clasp_pl.viz.html import QueryMarks, map_figure, write_map_html
from clasp_pl.viz.points import MapPoint, index_points
from clasp_pl.viz.projection import ProjectionConfig, cached_projection, project_2d
from clasp_pl.viz.queries import query_marks, query_scores

log = logging.getLogger(__name__)

INDEX_CACHE = "map-cache"
"""Folder inside an index that holds its cached map coordinates."""


@dataclass
class MapTimings:
    """Seconds spent in each stage of a map build."""

    projection: float = 0.0
    queries: float = 0.0
    html: float = 0.0


def write_embedding_map(
    embeddings: torch.Tensor | np.ndarray,
    points: Sequence[MapPoint],
    out_html: str | Path,
    *,
    colouring: Colouring | str = "crystal_system",
    marks: Sequence[QueryMarks] = (),
    cache_dir: str | Path | None = None,
    projection: ProjectionConfig = ProjectionConfig(),
    title: str | None = None,
    timings: MapTimings | None = None,
) -> Path:
    """Write the interactive map of ``[N, D]`` embeddings whose points are ``points``.

    Args:
        embeddings: ``[N, D]`` structure embeddings (any float dtype, any device).
        points: ``[N]`` what each row is (:func:`~clasp_pl.viz.points.record_points`,
            :func:`~clasp_pl.viz.points.index_points`).
        out_html: the HTML file to write (self-contained, opens offline).
        colouring: a :class:`Colouring` or one of :data:`~clasp_pl.viz.colouring.FIELDS`.
        marks: top-k hits of queries, starred.
        cache_dir: folder for the cached 2-D coordinates (None: computed, not kept).
        projection: t-SNE settings.
        title: figure title (default: ``"CLaSP structure embeddings (t-SNE, N structures)"``).
        timings: filled with the seconds of each stage, when given.

    Returns:
        ``out_html``.
    """
    timings = timings if timings is not None else MapTimings()
    array = _numpy(embeddings)
    start = time.perf_counter()
    if cache_dir is None:
        xy = project_2d(array, projection)
    else:
        xy = cached_projection(array, cache_dir, projection)
    timings.projection = time.perf_counter() - start
    if isinstance(colouring, str):
        colouring = colour_by_field(points, colouring)
    start = time.perf_counter()
    title = title or f"CLaSP structure embeddings (t-SNE, {len(points):,} structures)"
    figure = map_figure(xy, points, colouring, marks, title=f"{title} — colour: {colouring.title}")
    path = write_map_html(figure, out_html)
    timings.html = time.perf_counter() - start
    return path


def index_map(
    index_folder: str | Path,
    out_html: str | Path,
    *,
    color_by: str = "crystal_system",
    queries: Sequence[str] = (),
    top_k: int = 10,
    ckpt: str | Path | None = None,
    device: str = "cpu",
    projection: ProjectionConfig = ProjectionConfig(),
    timings: MapTimings | None = None,
) -> Path:
    """Map every structure of an index folder (see :func:`write_embedding_map`).

    Args:
        color_by: one of :data:`~clasp_pl.viz.colouring.FIELDS`, else a free-text query whose
            learned cosine similarity colours the points.
        queries: texts whose top-``top_k`` hits (as ``clasp search`` ranks them) are starred.
        ckpt: the model for query scores (default: the checkpoint recorded in ``index.json``);
            loaded only when a query needs it.

    Coordinates are cached in ``<index>/map-cache/``.
    """
    timings = timings if timings is not None else MapTimings()
    index = EmbeddingIndex(index_folder)
    points = index_points(index_folder)
    colouring: Colouring | str = color_by
    marks: list[QueryMarks] = []
    if color_by not in FIELDS or queries:
        start = time.perf_counter()
        ckpt = ckpt or index.info["checkpoint"]
        model = load_model(ckpt, device)
        if color_by not in FIELDS:
            colouring = colour_by_scores(color_by, query_scores(model, index.embeddings, color_by))
        alpha, why = load_alpha(ckpt)
        log.info("query marks: alpha %g (%s)", alpha, why)
        marks = query_marks(index, model, queries, top_k, alpha)
        timings.queries = time.perf_counter() - start
    return write_embedding_map(
        index.embeddings,
        points,
        out_html,
        colouring=colouring,
        marks=marks,
        cache_dir=Path(index_folder) / INDEX_CACHE,
        projection=projection,
        timings=timings,
    )


def _numpy(embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        return embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings)
