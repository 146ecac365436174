"""Contrastive crystal-text losses (CLIP-style) with multi-positive targets and cross-rank gather.

Four loss kinds share one pipeline (:class:`ContrastiveLoss`):

``infonce``
    Symmetric softmax cross-entropy over ``exp(logit_scale) * cos`` (CLIP), learnable scale.
``cosface``
    Same, with an additive cosine margin on the positive logits: ``s * (cos - m)``.
``arcface``
    Same, with an additive angular margin on the positive logits: ``s * cos(theta + m)``.
``siglip``
    Pairwise sigmoid loss ``-log sigmoid(label * (s * cos + b))`` with learnable ``s`` and ``b``.

Samples that share a ``group_id`` (the same paper, hence the same text) are positives of each
other. The softmax kinds use soft targets spread uniformly over all same-group columns of a row;
with all groups distinct this is exactly the standard CLIP loss.

Distributed training and gradient scaling
-----------------------------------------
When a ``torch.distributed`` process group with world size ``W > 1`` is initialised, the
embeddings of all ranks are gathered with :func:`torch.distributed.nn.functional.all_gather`,
whose backward *sums* the gradients that all ranks send to each rank's slice. Local batch sizes
must be equal on every rank (the training loader uses ``drop_last=True``).

Let ``L`` be the loss of the whole global batch computed by a single process.

* Global mode (``local_loss=False``): every rank computes ``L`` itself. The gradient arriving at
  rank ``r``'s embeddings is the sum over ranks, ``W * dL/dx_r``; DDP then averages parameter
  gradients over ranks, ``(1/W) * sum_r W * dL/dx_r * dx_r/dtheta = dL/dtheta``. The loss's own
  scale/bias get ``dL/ds`` on every rank, and their mean is ``dL/ds`` as well.
* Local mode (``local_loss=True``): rank ``r`` computes ``L_r``, the same per-row terms restricted
  to its own rows (its crystals vs all texts and its texts vs all crystals), normalised by its
  *local* row count, so that ``mean_r L_r = L``. The summed all-gather backward gives rank ``r``'s
  embeddings ``sum_k dL_k/dx_r``, and DDP's mean turns that into ``d(mean_k L_k)/dtheta =
  dL/dtheta``. The scale/bias gradients average to ``d(mean_k L_k)/ds = dL/ds``.

So no extra gradient rescaling is needed in either mode; memory is ``O(B_global^2)`` in global
mode and ``O(B_local * B_global)`` in local mode.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

LossKind = Literal["infonce", "cosface", "arcface", "siglip"]
LOSS_KINDS: tuple[str, ...] = ("infonce", "cosface", "arcface", "siglip")
_MARGIN_KINDS = ("cosface", "arcface")
_ACOS_EPS = 1e-7
SIGLIP_INIT_SCALE = 10.0


def distributed_world_size() -> int:
    """World size of the default process group, or 1 when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_batch(
    crystal_emb: Tensor, text_emb: Tensor, group_ids: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate the batches of all ranks in rank order.

    The embeddings are gathered with gradients (the backward sums the gradients of all ranks
    into each rank's slice); ``group_ids`` are gathered without. Without a process group, or with
    world size 1, the inputs are returned unchanged. Local batch sizes must match across ranks.

    Args:
        crystal_emb: ``[B, D]`` local crystal embeddings.
        text_emb: ``[B, D]`` local text embeddings.
        group_ids: ``[B]`` local group ids.

    Returns:
        ``([W*B, D], [W*B, D], [W*B])`` global crystal embeddings, text embeddings and group ids.
    """
    world_size = distributed_world_size()
    if world_size == 1:
        return crystal_emb, text_emb, group_ids
    ids = [torch.empty_like(group_ids) for _ in range(world_size)]
    dist.all_gather(ids, group_ids.contiguous())
    return _all_gather_with_grad(crystal_emb), _all_gather_with_grad(text_emb), torch.cat(ids)


def _all_gather_with_grad(tensor: Tensor) -> Tensor:
    """``[B, D]`` -> ``[W*B, D]``; the backward sums all ranks' gradients into each slice.

    Recent torch versions flag ``torch.distributed.nn.functional.all_gather`` as deprecated in
    favour of a private ``_functional_collectives`` API (absent from older supported versions);
    that FutureWarning is silenced here so it does not spam every rank's training log.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*all_gather is deprecated", category=FutureWarning
        )
        return torch.cat(dist_nn.all_gather(tensor), dim=0)


def positive_mask(row_ids: Tensor, col_ids: Tensor) -> Tensor:
    """Boolean ``[R, C]`` mask, True where ``row_ids[i] == col_ids[j]`` (same group)."""
    return row_ids[:, None] == col_ids[None, :]


def soft_target_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of the cross-entropy against a uniform distribution over the positives.

    Args:
        logits: ``[R, C]`` logits.
        positives: ``[R, C]`` boolean mask with at least one True per row.

    Returns:
        Scalar loss; with exactly one positive per row it equals ``F.cross_entropy(logits, idx)``
        where ``idx[i]`` is the column of row ``i``'s positive.
    """
    targets = positives.to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    return F.cross_entropy(logits, targets)


def arcface_cosine(cos: Tensor, margin: float) -> Tensor:
    """``cos(theta + m)`` with ``theta = arccos(cos)``, made monotonic past ``theta + m > pi``.

    ``cos`` is clamped to ``[-1 + eps, 1 - eps]`` so ``arccos`` keeps a finite gradient. Where
    ``theta + m > pi``, ``cos(theta + m)`` would start increasing again with ``theta`` (rewarding
    a *larger* angle to the positive), so the usual ArcFace fallback ``cos - m * sin(m)`` (an
    additive CosFace-style penalty) is used there instead; the result is monotonically
    decreasing in ``theta`` over the whole range.

    Args:
        cos: ``[...]`` cosine similarities.
        margin: angular margin ``m`` in radians.

    Returns:
        ``[...]`` margin-adjusted cosines.
    """
    theta = torch.acos(cos.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
    fallback = cos - margin * math.sin(margin)
    return torch.where(theta + margin <= math.pi, torch.cos(theta + margin), fallback)


class ContrastiveLoss(nn.Module):
    """Symmetric crystal-text contrastive loss with multi-positive targets and DDP support.

    Args:
        kind: ``"infonce"``, ``"cosface"``, ``"arcface"`` or ``"siglip"`` (see module docstring).
        local_loss: score only this rank's rows against all gathered columns (memory
            ``O(B_local * B_global)``) instead of the full global matrix on every rank. Both
            modes give the single-process gradient after DDP's gradient averaging.
        init_temperature: infonce initial temperature (``logit_scale = log(1 / T)``), and the
            default fixed scale ``s = 1 / T`` of cosface/arcface.
        max_logit_scale: upper clamp of the learnable scale ``exp(logit_scale)``.
        learn_scale: learn the scale (infonce, siglip). cosface/arcface always use a fixed scale.
        scale: fixed scale ``s``; when given, the scale is not learned for any kind.
        margin: cosface cosine margin or arcface angular margin (radians); must be 0 otherwise.
        siglip_init_bias: initial siglip bias.

    ``logit_scale`` (a parameter when learned, else a buffer) holds ``log(s)``; siglip also has a
    learnable ``logit_bias``.
    """

    def __init__(
        self,
        kind: LossKind = "infonce",
        local_loss: bool = False,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learn_scale: bool = True,
        scale: float | None = None,
        margin: float = 0.0,
        siglip_init_bias: float = -10.0,
    ) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss kind {kind!r}; expected one of {LOSS_KINDS}")
        if margin != 0.0 and kind not in _MARGIN_KINDS:
            raise ValueError(
                f"margin is only used by {_MARGIN_KINDS}, got margin={margin} for {kind!r}"
            )
        if init_temperature <= 0.0 or (scale is not None and scale <= 0.0):
            raise ValueError("init_temperature and scale must be positive")
        self.kind = kind
        self.local_loss = local_loss
        self.margin = margin
        self.max_log_scale = math.log(max_logit_scale)

        default_scale = SIGLIP_INIT_SCALE if kind == "siglip" else 1.0 / init_temperature
        log_scale = torch.tensor(math.log(scale if scale is not None else default_scale))
        if learn_scale and scale is None and kind not in _MARGIN_KINDS:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("logit_scale", log_scale)
        self.logit_bias = nn.Parameter(torch.tensor(siglip_init_bias)) if kind == "siglip" else None

    @property
    def logit_scale_value(self) -> float:
        """Current multiplicative scale ``s = exp(logit_scale)`` (inverse temperature)."""
        return float(self.logit_scale.detach().exp())

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp a learnable ``logit_scale`` to ``[0, log(max_logit_scale)]`` (after each step)."""
        if isinstance(self.logit_scale, nn.Parameter):
            self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, crystal_emb: Tensor, text_emb: Tensor, group_ids: Tensor) -> Tensor:
        """Loss of this rank's batch, gathered across ranks when distributed.

        Args:
            crystal_emb: ``[B, D]`` L2-normalised crystal embeddings of this rank.
            text_emb: ``[B, D]`` L2-normalised text embeddings of this rank.
            group_ids: ``[B]`` int64 group (paper) ids; equal ids are mutual positives.

        Returns:
            Scalar loss: the global-batch loss (global mode) or this rank's share of it, whose
            mean over ranks is the global-batch loss (local mode).
        """
        if crystal_emb.shape != text_emb.shape or group_ids.shape != crystal_emb.shape[:1]:
            raise ValueError(
                f"expected [B, D], [B, D], [B]; got {tuple(crystal_emb.shape)}, "
                f"{tuple(text_emb.shape)}, {tuple(group_ids.shape)}"
            )
        crystal_all, text_all, ids_all = gather_batch(crystal_emb, text_emb, group_ids)
        if self.local_loss:
            crystal_rows, text_rows, row_ids = crystal_emb, text_emb, group_ids
        else:
            crystal_rows, text_rows, row_ids = crystal_all, text_all, ids_all
        positives = positive_mask(row_ids, ids_all)
        if self.kind == "siglip":
            return self._sigmoid_loss(crystal_rows @ text_all.T, positives)
        crystal_to_text = self._softmax_loss(crystal_rows @ text_all.T, positives)
        text_to_crystal = self._softmax_loss(text_rows @ crystal_all.T, positives)
        return 0.5 * (crystal_to_text + text_to_crystal)

    def _softmax_loss(self, cos: Tensor, positives: Tensor) -> Tensor:
        """Soft-target cross-entropy of one direction, ``[R, C]`` cosines -> scalar."""
        if self.kind == "cosface":
            cos = cos - self.margin * positives.to(cos.dtype)
        elif self.kind == "arcface":
            cos = torch.where(positives, arcface_cosine(cos, self.margin), cos)
        return soft_target_cross_entropy(self.logit_scale.exp() * cos, positives)

    def _sigmoid_loss(self, cos: Tensor, positives: Tensor) -> Tensor:
        """SigLIP loss of ``[R, C]`` cosines: ``-sum log sigmoid(label * logit) / R``."""
        logits = self.logit_scale.exp() * cos + self.logit_bias
        labels = 2.0 * positives.to(cos.dtype) - 1.0
        return -F.logsigmoid(labels * logits).sum() / cos.shape[0]
