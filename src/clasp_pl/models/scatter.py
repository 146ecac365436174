"""Segment sums and means over atoms/edges: native ``index_add_``, or torch-scatter when installed.

torch-scatter (``pip install clasp_pl[scatter]``) is an optional compiled fast path; the native
path gives the same numbers and is as fast for sums on CPU.
"""

from __future__ import annotations

import torch

try:  # optional fast path
    import torch_scatter
except ImportError:  # pragma: no cover - depends on the environment
    torch_scatter = None


def segment_sum(
    values: torch.Tensor,
    index: torch.Tensor,
    num_segments: int,
    use_torch_scatter: bool | None = None,
) -> torch.Tensor:
    """Sum rows of ``values [N, F]`` into ``[num_segments, F]`` by ``index [N]``."""
    if use_torch_scatter is None:
        use_torch_scatter = torch_scatter is not None
    if use_torch_scatter:
        if torch_scatter is None:
            raise ImportError("torch-scatter is not installed: pip install clasp_pl[scatter]")
        return torch_scatter.scatter_add(values, index, dim=0, dim_size=num_segments)
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.index_add_(0, index, values)


def weighted_segment_sum(
    values: torch.Tensor,
    weights: torch.Tensor,
    index: torch.Tensor,
    num_segments: int,
    use_torch_scatter: bool | None = None,
) -> torch.Tensor:
    """``sum_m weights[m] * values[m]`` per segment: ``values [M, F]``, ``weights [M]`` and
    ``index [M]`` -> ``[num_segments, F]`` (a segment with one row of weight 1 gets that row
    exactly)."""
    return segment_sum(values * weights.unsqueeze(-1), index, num_segments, use_torch_scatter)


def segment_mean(
    values: torch.Tensor,
    index: torch.Tensor,
    num_segments: int,
    use_torch_scatter: bool | None = None,
) -> torch.Tensor:
    """Mean of rows of ``values [N, F]`` per segment, ``[num_segments, F]`` (empty segments: 0)."""
    sums = segment_sum(values, index, num_segments, use_torch_scatter)
    counts = torch.bincount(index, minlength=num_segments).clamp_min(1).to(values.dtype)
    return sums / counts.unsqueeze(-1)
