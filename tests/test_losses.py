"""Single-process tests of :mod:`clasp_pl.losses` against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clasp_pl.losses import (
    LOSS_KINDS,
    ContrastiveLoss,
    arcface_cosine,
    distributed_world_size,
    gather_batch,
)

CRYSTAL_ANGLES = [0.0, 1.0, 2.5]
TEXT_ANGLES = [0.3, 1.2, -2.0]
# the module stores log(scale) as a float32 scalar before .double(), hence ~1e-7 relative error
REL = 1e-6


def unit_vectors(angles: list[float]) -> torch.Tensor:
    """``[N, 2]`` float64 unit vectors at the given angles."""
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()], dim=1)


def cos_matrix() -> list[list[float]]:
    """``cos[i][j] = cos(alpha_i - beta_j)`` for the crystal/text angles above."""
    return [[math.cos(a - b) for b in TEXT_ANGLES] for a in CRYSTAL_ANGLES]


def transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m, strict=True)]


def soft_ce(logits: list[list[float]], groups: list[int]) -> float:
    """Mean over rows of ``-sum_j t_ij log softmax(l_i)_j`` with uniform same-group targets."""
    total = 0.0
    for i, row in enumerate(logits):
        log_z = math.log(sum(math.exp(v) for v in row))
        pos = [j for j, g in enumerate(groups) if g == groups[i]]
        total += -sum(row[j] - log_z for j in pos) / len(pos)
    return total / len(logits)


def symmetric_soft_ce(logits: list[list[float]], groups: list[int]) -> float:
    return 0.5 * (soft_ce(logits, groups) + soft_ce(transpose(logits), groups))


def run_loss(loss: ContrastiveLoss, groups: list[int]) -> float:
    ids = torch.tensor(groups, dtype=torch.int64)
    return loss.double()(unit_vectors(CRYSTAL_ANGLES), unit_vectors(TEXT_ANGLES), ids).item()


# --------------------------------------------------------------------------- hand-computed values


@pytest.mark.parametrize("groups", [[1, 2, 3], [7, 7, 9]])
def test_infonce_matches_hand_computed(groups: list[int]) -> None:
    s = 1.0 / 0.07
    logits = [[s * c for c in row] for row in cos_matrix()]
    expected = symmetric_soft_ce(logits, groups)
    assert run_loss(ContrastiveLoss("infonce"), groups) == pytest.approx(expected, rel=REL)


def test_multi_positive_differs_from_standard_clip_with_duplicates() -> None:
    """Groups [7, 7, 9]: rows 0/1 have targets (1/2, 1/2, 0), unlike the one-hot CLIP targets."""
    c = cos_matrix()
    s = 2.0

    def lse(row: list[float]) -> float:
        return math.log(sum(math.exp(s * v) for v in row))

    ct, tc = c, transpose(c)
    multi = 0.5 * sum(
        (
            -0.5 * (s * m[0][0] + s * m[0][1])
            + lse(m[0])
            - 0.5 * (s * m[1][0] + s * m[1][1])
            + lse(m[1])
            - s * m[2][2]
            + lse(m[2])
        )
        / 3
        for m in (ct, tc)
    )
    standard = 0.5 * sum(sum(-s * m[i][i] + lse(m[i]) for i in range(3)) / 3 for m in (ct, tc))
    got = run_loss(ContrastiveLoss("infonce", scale=s), [7, 7, 9])
    assert got == pytest.approx(multi, rel=REL)
    assert abs(multi - standard) > 1e-2
    assert run_loss(ContrastiveLoss("infonce", scale=s), [1, 2, 3]) == pytest.approx(
        standard, rel=REL
    )


@pytest.mark.parametrize("groups", [[1, 2, 3], [7, 7, 9]])
def test_cosface_matches_hand_computed(groups: list[int]) -> None:
    s, m = 3.0, 0.5
    logits = [
        [s * (c - (m if groups[i] == groups[j] else 0.0)) for j, c in enumerate(row)]
        for i, row in enumerate(cos_matrix())
    ]
    expected = symmetric_soft_ce(logits, groups)
    assert run_loss(ContrastiveLoss("cosface", scale=s, margin=m), groups) == pytest.approx(
        expected, rel=REL
    )


@pytest.mark.parametrize("groups", [[1, 2, 3], [7, 7, 9]])
def test_arcface_matches_hand_computed(groups: list[int]) -> None:
    s, m = 10.0, 0.1
    logits = [
        [
            s * (math.cos(math.acos(c) + m) if groups[i] == groups[j] else c)
            for j, c in enumerate(row)
        ]
        for i, row in enumerate(cos_matrix())
    ]
    expected = symmetric_soft_ce(logits, groups)
    assert run_loss(ContrastiveLoss("arcface", scale=s, margin=m), groups) == pytest.approx(
        expected, rel=REL
    )


def test_arcface_fallback_when_angle_plus_margin_exceeds_pi() -> None:
    m = 0.5
    cos = torch.tensor([math.cos(0.5), math.cos(3.0), -1.0], dtype=torch.float64)
    got = arcface_cosine(cos, m)
    assert got[0].item() == pytest.approx(math.cos(1.0), rel=1e-12)
    assert got[1].item() == pytest.approx(math.cos(3.0) - m * math.sin(m), rel=1e-12)
    assert got[2].item() == pytest.approx(-1.0 - m * math.sin(m), rel=1e-12)
    # monotonically non-increasing in theta over [0, pi]
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    assert torch.all(arcface_cosine(theta.cos(), m).diff() <= 1e-12)


@pytest.mark.parametrize("groups", [[1, 2, 3], [7, 7, 9]])
def test_siglip_matches_hand_computed(groups: list[int]) -> None:
    s, b = 10.0, -2.0
    total = 0.0
    for i, row in enumerate(cos_matrix()):
        for j, c in enumerate(row):
            label = 1.0 if groups[i] == groups[j] else -1.0
            total += math.log(1.0 + math.exp(-label * (s * c + b)))  # -log sigmoid(label * z)
    expected = total / 3
    loss = ContrastiveLoss("siglip", siglip_init_bias=b)
    assert loss.logit_scale_value == pytest.approx(s)
    assert run_loss(loss, groups) == pytest.approx(expected, rel=REL)


# --------------------------------------------------------------------------- properties


def test_multi_positive_equals_standard_clip_when_groups_distinct() -> None:
    gen = torch.Generator().manual_seed(0)
    crystal = F.normalize(torch.randn(6, 5, generator=gen), dim=1)
    text = F.normalize(torch.randn(6, 5, generator=gen), dim=1)
    loss = ContrastiveLoss("infonce")
    got = loss(crystal, text, torch.arange(100, 106))
    logits = loss.logit_scale.exp() * crystal @ text.T
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_local_loss_equals_global_loss_in_single_process(kind: str) -> None:
    margin = 0.2 if kind in ("cosface", "arcface") else 0.0
    ids = torch.tensor([3, 1, 3, 2])
    crystal = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    glob = ContrastiveLoss(kind, margin=margin).double()(crystal, text, ids)
    local = ContrastiveLoss(kind, local_loss=True, margin=margin).double()(crystal, text, ids)
    torch.testing.assert_close(glob, local)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_gradcheck_embeddings(kind: str) -> None:
    margin = 0.3 if kind in ("cosface", "arcface") else 0.0
    loss = ContrastiveLoss(kind, margin=margin, siglip_init_bias=-1.0).double()
    ids = torch.tensor([5, 6, 5])
    crystal = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1).requires_grad_()
    text = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, t: loss(c, t, ids), (crystal, text))


def test_gradient_flows_to_infonce_logit_scale() -> None:
    loss = ContrastiveLoss("infonce")
    crystal = F.normalize(torch.randn(4, 3), dim=1)
    text = F.normalize(torch.randn(4, 3), dim=1)
    loss(crystal, text, torch.arange(4)).backward()
    assert [name for name, _ in loss.named_parameters()] == ["logit_scale"]
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0


def test_gradient_flows_to_siglip_scale_and_bias() -> None:
    loss = ContrastiveLoss("siglip")
    crystal = F.normalize(torch.randn(4, 3), dim=1)
    text = F.normalize(torch.randn(4, 3), dim=1)
    loss(crystal, text, torch.tensor([0, 0, 1, 2])).backward()
    grads = dict(loss.named_parameters())
    assert set(grads) == {"logit_scale", "logit_bias"}
    assert all(p.grad is not None and p.grad.abs() > 0 for p in grads.values())


@pytest.mark.parametrize(
    ("kwargs", "expected_scale"),
    [
        ({"kind": "infonce", "learn_scale": False}, 1 / 0.07),
        ({"kind": "infonce", "scale": 5.0}, 5.0),
        ({"kind": "cosface", "margin": 0.5}, 1 / 0.07),
        ({"kind": "cosface", "scale": 3.0, "margin": 0.5}, 3.0),
        ({"kind": "arcface", "scale": 10.0, "margin": 0.1}, 10.0),
    ],
)
def test_fixed_scale_is_a_buffer(kwargs: dict, expected_scale: float) -> None:
    loss = ContrastiveLoss(**kwargs)
    assert list(loss.parameters()) == []
    assert "logit_scale" in dict(loss.named_buffers())
    loss.clamp_parameters_()  # no-op on a fixed scale
    assert loss.logit_scale_value == pytest.approx(expected_scale)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_clamp_parameters(kind: str) -> None:
    loss = ContrastiveLoss(kind, max_logit_scale=50.0)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    loss.clamp_parameters_()
    assert loss.logit_scale_value == pytest.approx(50.0)
    with torch.no_grad():
        loss.logit_scale.fill_(-3.0)
    loss.clamp_parameters_()
    assert loss.logit_scale.item() == 0.0
    assert loss.logit_scale_value == pytest.approx(1.0)


def test_infonce_initial_scale_is_inverse_temperature() -> None:
    loss = ContrastiveLoss("infonce", init_temperature=0.05)
    assert loss.logit_scale.item() == pytest.approx(math.log(20.0))
    assert loss.logit_scale_value == pytest.approx(20.0)


def test_world_size_one_without_process_group() -> None:
    assert not torch.distributed.is_initialized()
    assert distributed_world_size() == 1
    crystal, text, ids = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([1, 2])
    gathered = gather_batch(crystal, text, ids)
    assert gathered[0] is crystal and gathered[1] is text and gathered[2] is ids
    out = ContrastiveLoss("infonce", local_loss=True)(
        F.normalize(crystal, dim=1), F.normalize(text, dim=1), ids
    )
    assert out.ndim == 0 and torch.isfinite(out)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown loss kind"):
        ContrastiveLoss("triplet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss("infonce", margin=0.1)
    with pytest.raises(ValueError, match="positive"):
        ContrastiveLoss("cosface", scale=0.0)
    with pytest.raises(ValueError, match="expected"):
        ContrastiveLoss()(torch.randn(3, 2), torch.randn(2, 2), torch.arange(3))
