"""The map as one self-contained HTML file: Plotly WebGL scatter, plotly.js inlined (opens offline).

Every point is a marker of a ``scattergl`` trace (WebGL, so 100k points stay responsive); its
hover label shows id, formula, space group, mineral and paper title. Categorical colourings get
one trace per category (click a legend entry to hide it), continuous ones a single trace with a
colour bar. Each query's top-k hits are drawn on top as stars, one trace per query.

The figure is written as a plain dict with ``validate=False``: Plotly's validators would walk
every point's hover fields, which costs seconds at 100k points and checks nothing we did not
build here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio

from clasp_pl.viz.colouring import Colouring
from clasp_pl.viz.points import UNKNOWN, MapPoint, hover_rows

DIV_ID = "clasp-map"
"""The ``id`` of the plot's ``<div>`` (the browser tests read ``gd.data`` from it)."""
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#8c6d31",
)
MARK_COLOURS = ("#000000", "#e6007e", "#00a6d6", "#ff8c00", "#6a0dad", "#008b45")
UNKNOWN_COLOUR = "#c8c8c8"
TITLE_WIDTH = 70
HOVER = (
    "<b>%{customdata[0]}</b>  %{customdata[1]}<br>space group %{customdata[2]}"
    "<br>mineral %{customdata[3]}<br>%{customdata[4]}"
)


@dataclass(frozen=True)
class QueryMarks:
    """The top-k hits of one query, to be starred on the map.

    Attributes:
        query: the query text.
        rows: ``[k]`` point indices, best first.
        scores: ``[k]`` their search scores (as ``clasp search`` ranks them).
    """

    query: str
    rows: np.ndarray
    scores: np.ndarray


def map_figure(
    xy: np.ndarray,
    points: Sequence[MapPoint],
    colouring: Colouring,
    marks: Sequence[QueryMarks] = (),
    title: str = "",
    point_size: float | None = None,
) -> dict[str, Any]:
    """The Plotly figure (a dict) of ``[N, 2]`` coordinates and their ``[N]`` points."""
    if len(xy) != len(points):
        raise ValueError(f"{len(xy)} coordinates for {len(points)} points")
    hover = np.array(hover_rows(points), dtype=object).reshape(len(points), 5)
    wrapped = {title: _wrap(title) for title in set(hover[:, 4])}  # papers repeat
    hover[:, 4] = [wrapped[title] for title in hover[:, 4]]
    size = point_size or float(np.clip(9 - 1.2 * np.log10(max(len(points), 1)), 2.5, 7))
    traces = (
        _continuous_traces(xy, hover, colouring, size)
        if colouring.continuous
        else _categorical_traces(xy, hover, colouring, size)
    )
    for number, mark in enumerate(marks):
        traces.append(_mark_trace(xy, hover, mark, MARK_COLOURS[number % len(MARK_COLOURS)]))
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 16}},
        "hovermode": "closest",
        "hoverlabel": {"align": "left"},
        "xaxis": {"visible": False},
        "yaxis": {"visible": False, "scaleanchor": "x"},
        "legend": {"title": {"text": colouring.title}, "itemsizing": "constant"},
        "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
        "plot_bgcolor": "white",
    }
    return {"data": traces, "layout": layout}


def write_map_html(figure: dict[str, Any], out: str | Path) -> Path:
    """Write ``figure`` as one HTML file with plotly.js inlined (no network needed); returns it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    html = pio.to_html(
        figure,
        include_plotlyjs=True,
        full_html=True,
        div_id=DIV_ID,
        validate=False,
        default_width="100%",
        default_height="95vh",
        config={"scrollZoom": True, "displaylogo": False, "responsive": True},
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


def _scatter(
    name: str, xy: np.ndarray, hover: np.ndarray, marker: dict, extra: str = ""
) -> dict[str, Any]:
    return {
        "type": "scattergl",
        "mode": "markers",
        "name": name,
        "x": xy[:, 0],
        "y": xy[:, 1],
        "customdata": hover.tolist(),
        "hovertemplate": HOVER + extra + "<extra>%{fullData.name}</extra>",
        "marker": marker,
    }


def _categorical_traces(
    xy: np.ndarray, hover: np.ndarray, colouring: Colouring, size: float
) -> list[dict[str, Any]]:
    labels = np.array(colouring.labels, dtype=object)
    traces = []
    colours = iter(PALETTE * (len(colouring.categories) // len(PALETTE) + 1))
    for category in colouring.categories:
        rows = np.flatnonzero(labels == category)
        colour = UNKNOWN_COLOUR if category == UNKNOWN else next(colours)
        marker = {"size": size, "color": colour, "opacity": 0.8}
        traces.append(_scatter(f"{category} ({len(rows)})", xy[rows], hover[rows], marker))
    return traces


def _continuous_traces(
    xy: np.ndarray, hover: np.ndarray, colouring: Colouring, size: float
) -> list[dict[str, Any]]:
    values = colouring.values
    known = np.flatnonzero(~np.isnan(values))
    known = known[np.argsort(values[known], kind="stable")]  # the highest drawn last, on top
    traces = []
    unknown = np.flatnonzero(np.isnan(values))
    if len(unknown):
        marker = {"size": size, "color": UNKNOWN_COLOUR, "opacity": 0.6}
        traces.append(_scatter(f"unknown ({len(unknown)})", xy[unknown], hover[unknown], marker))
    marker = {
        "size": size,
        "color": values[known],
        "colorscale": "Viridis",
        "showscale": True,
        "colorbar": {"title": {"text": colouring.title, "side": "right"}},
        "opacity": 0.85,
    }
    trace = _scatter(f"{colouring.title} ({len(known)})", xy[known], hover[known], marker)
    trace["hovertemplate"] = HOVER + "<br>value %{marker.color:.4g}<extra></extra>"
    traces.append(trace)
    return traces


def _mark_trace(xy: np.ndarray, hover: np.ndarray, mark: QueryMarks, colour: str) -> dict:
    rows = np.asarray(mark.rows, dtype=np.int64)
    data = np.concatenate(
        [hover[rows], [[f"{r}", f"{s:.4f}"] for r, s in enumerate(mark.scores, 1)]], axis=1
    ).reshape(len(rows), 7)
    marker = {
        "size": 15,
        "symbol": "star",
        "color": colour,
        "line": {"color": "white", "width": 1},
    }
    trace = _scatter(f"“{mark.query}”: top {len(rows)}", xy[rows], data, marker)
    trace["hovertemplate"] = (
        HOVER + "<br>rank %{customdata[5]}, score %{customdata[6]}<extra>%{fullData.name}</extra>"
    )
    return trace


def _wrap(text: str) -> str:
    """Words joined into lines of at most :data:`TITLE_WIDTH` characters (longer words alone),
    separated by ``<br>``; ``"–"`` for an empty text."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= TITLE_WIDTH:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines) or "–"
