"""2-D coordinates of structure embeddings: openTSNE t-SNE, cached by the embeddings' fingerprint.

t-SNE (openTSNE, PCA initialisation, cosine neighbours, a fixed seed) keeps the neighbourhoods
that retrieval uses; its coordinates carry no unit. Up to :attr:`ProjectionConfig.fit_limit`
points are embedded exactly. A larger set is embedded through landmarks: t-SNE of a random
sample of ``fit_limit`` points, then every other point is placed at the coordinate-wise median
of its ``k`` most cosine-similar landmarks (exact search, in blocks) plus a jitter of
:data:`JITTER` of the map's extent, so that points with the same neighbours do not hide each
other. That keeps 100k points to about a minute on 2 cores, most of it the landmark t-SNE.

The projection is the slow part of a map, so :func:`cached_projection` keeps it in
``xy-<fingerprint>.npy``: the fingerprint hashes the embeddings' bytes, shape and dtype and the
projection settings, so redrawing the same index with other colours or queries reuses it, and new
embeddings (a re-embedded index) get new coordinates.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CACHE_PREFIX = "xy-"
JITTER = 0.002
"""Standard deviation of the jitter of landmark-placed points, as a fraction of the map extent."""
_BLOCK = 4096  # rows of the non-landmark points scored against the landmarks at once


@dataclass(frozen=True)
class ProjectionConfig:
    """openTSNE settings.

    Attributes:
        perplexity: effective neighbour count (lowered to ``(N - 1) / 3`` for tiny sets).
        n_iter: optimisation iterations after the 250 of early exaggeration.
        seed: random state (same embeddings and seed give the same map).
        fit_limit: the most points embedded by t-SNE itself; the rest are placed by landmarks.
        neighbours: landmarks whose median places a non-landmark point.
        n_jobs: openTSNE threads (-1: all cores); not part of the fingerprint. One by default:
            its thread pool slows down badly on a shared machine (8.5k points on 2 busy cores:
            95 s on one thread, 277 s on two).
    """

    perplexity: float = 30.0
    n_iter: int = 500
    seed: int = 0
    fit_limit: int = 10_000
    neighbours: int = 5
    n_jobs: int = 1


def embedding_fingerprint(embeddings: np.ndarray, config: ProjectionConfig) -> str:
    """16 hex digits of sha256 over ``[N, D]`` embeddings (bytes, shape, dtype) and the
    settings that change the result (all but ``n_jobs``)."""
    digest = hashlib.sha256()
    array = np.ascontiguousarray(embeddings)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(memoryview(array).cast("B"))
    settings = {k: v for k, v in asdict(config).items() if k != "n_jobs"}
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:16]


def project_2d(embeddings: np.ndarray, config: ProjectionConfig = ProjectionConfig()) -> np.ndarray:
    """``[N, 2]`` float32 map coordinates of ``[N, D]`` embeddings (any float dtype).

    Fewer than 4 points cannot be embedded by t-SNE; they are placed on a line.
    """
    data = np.asarray(embeddings, dtype=np.float32)
    n = data.shape[0]
    if n < 4:
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    if n <= config.fit_limit:
        return tsne(data, config)
    rng = np.random.default_rng(config.seed)
    landmarks = np.sort(rng.choice(n, config.fit_limit, replace=False))
    rest = np.setdiff1d(np.arange(n), landmarks)
    xy = np.empty((n, 2), dtype=np.float32)
    xy[landmarks] = tsne(data[landmarks], config)
    xy[rest] = place_by_landmarks(data[rest], data[landmarks], xy[landmarks], config, rng)
    return xy


def tsne(data: np.ndarray, config: ProjectionConfig) -> np.ndarray:
    """``[N, 2]`` openTSNE embedding of ``[N, D]`` float32 ``data`` (Barnes–Hut gradients
    below 10,000 points, FFT-interpolated ones from there: openTSNE's own choice)."""
    from openTSNE import TSNE  # imported here: ~1 s, and only a cache miss needs it

    n = data.shape[0]
    return np.asarray(
        TSNE(
            perplexity=min(config.perplexity, (n - 1) / 3),
            n_iter=config.n_iter,
            initialization="pca",
            metric="cosine",
            random_state=config.seed,
            n_jobs=config.n_jobs if config.n_jobs > 0 else os.cpu_count() or 1,
            verbose=False,
        ).fit(data),
        dtype=np.float32,
    )


def place_by_landmarks(
    data: np.ndarray,
    landmarks: np.ndarray,
    landmark_xy: np.ndarray,
    config: ProjectionConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[M, 2]`` positions of ``[M, D]`` points: the median position of each one's
    ``config.neighbours`` most cosine-similar of the ``[L, D]`` landmarks at ``[L, 2]``."""
    targets = torch.nn.functional.normalize(torch.from_numpy(landmarks), dim=1)
    out = np.empty((data.shape[0], 2), dtype=np.float32)
    for start in range(0, data.shape[0], _BLOCK):
        block = torch.nn.functional.normalize(torch.from_numpy(data[start : start + _BLOCK]), dim=1)
        nearest = (block @ targets.T).topk(config.neighbours, dim=1).indices.numpy()
        out[start : start + _BLOCK] = np.median(landmark_xy[nearest], axis=1)
    extent = float(np.ptp(landmark_xy, axis=0).max())
    return out + rng.normal(scale=JITTER * extent, size=out.shape).astype(np.float32)


def cached_projection(
    embeddings: np.ndarray, cache_dir: str | Path, config: ProjectionConfig = ProjectionConfig()
) -> np.ndarray:
    """:func:`project_2d` of ``embeddings``, read from ``cache_dir/xy-<fingerprint>.npy`` when
    present, else computed and written there (atomically)."""
    path = Path(cache_dir) / f"{CACHE_PREFIX}{embedding_fingerprint(embeddings, config)}.npy"
    if path.is_file():
        log.info("map coordinates from %s", path)
        return np.load(path)
    log.info("projecting %d embeddings to 2-D (t-SNE); cached in %s", len(embeddings), path)
    xy = project_2d(embeddings, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, xy)
    tmp.replace(path)
    return xy
