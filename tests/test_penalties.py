"""bae_lens.penalties: exact values, hinge and reductions, and the covariance penalties
against naive dense references on values and gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bae_lens.penalties import (
    CodeStats,
    abs_offdiag_covariance,
    binary_entropy_bits,
    code_stats_from_rates,
    dependence_penalty,
    entropy_bits,
    entropy_loss,
    firing_rates,
    frobenius_offdiag_covariance,
)

H_QUARTER = 0.5 + 0.75 * math.log2(4 / 3)  # Hb(1/4) = Hb(3/4) = 0.8112781244591328


def _all_codes(r: int) -> torch.Tensor:
    """All 2^r rows of r bits: every bit is a fair coin, independent of the others."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=r)), dtype=torch.float64)


def _random_code(n: int = 37, n_bits: int = 10, seed: int = 0) -> torch.Tensor:
    """Random 0/1 code with no constant column. With n prime, C_ij = (n c_ij - a_i a_j)/n^2
    is then never 0, so sign(C) is the same for any summation order."""
    gen = torch.Generator().manual_seed(seed)
    h = (torch.rand(n, n_bits, generator=gen) < 0.3).to(torch.float64)
    h[0] = 1.0
    h[1] = 0.0
    return h


def _naive_cov(h: torch.Tensor) -> torch.Tensor:
    return torch.cov(h.T, correction=0)


def _naive_abs(h: torch.Tensor) -> torch.Tensor:
    c = _naive_cov(h).abs()
    return c.sum() - c.diagonal().sum()


def _naive_frobenius(h: torch.Tensor) -> torch.Tensor:
    c = _naive_cov(h) ** 2
    return c.sum() - c.diagonal().sum()


def _value_and_grad(fn, h: torch.Tensor, upstream: float = 1.7):
    leaf = h.clone().requires_grad_(True)
    value = fn(leaf)
    (upstream * value).backward()
    assert leaf.grad is not None
    return value.detach(), leaf.grad


# ---------------------------------------------------------------- entropy


def test_binary_entropy_exact_values() -> None:
    p = torch.tensor([0.0, 0.5, 1.0, 0.25, 0.75], dtype=torch.float64)
    values = binary_entropy_bits(p)
    assert values[:3].tolist() == [0.0, 1.0, 0.0]
    torch.testing.assert_close(
        values[3:], torch.tensor([H_QUARTER, H_QUARTER], dtype=torch.float64)
    )
    assert binary_entropy_bits(torch.tensor(0.5)).dtype == torch.float32


def test_binary_entropy_gradient_finite_at_ends_and_exact_inside() -> None:
    p = torch.tensor([0.0, 1.0, 0.25, 0.5], dtype=torch.float64, requires_grad=True)
    binary_entropy_bits(p).sum().backward()
    assert p.grad is not None
    assert torch.isfinite(p.grad).all()
    assert p.grad[:2].tolist() == [0.0, 0.0]
    # dHb/dp = log2((1 - p) / p)
    torch.testing.assert_close(p.grad[2:], torch.tensor([math.log2(3.0), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_entropy_of_constant_code_is_zero(fill: float) -> None:
    h = torch.full((8, 5), fill, requires_grad=True)
    value = entropy_bits(h)
    assert value.item() == 0.0
    value.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_entropy_of_independent_fair_bits_is_r(r: int) -> None:
    assert entropy_bits(_all_codes(r)).item() == float(r)
    assert entropy_bits(_all_codes(r).float()).item() == float(r)


def test_firing_rates() -> None:
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert firing_rates(h).tolist() == [0.75, 0.25]


def test_entropy_loss_threshold_hinge_and_reductions() -> None:
    h = _all_codes(3)  # H = 3 bits over 3 code bits
    assert entropy_loss(h, threshold=0.0, reduction="sum").item() == 3.0
    assert entropy_loss(h, threshold=0.0, reduction="mean").item() == 1.0
    assert entropy_loss(h, threshold=3.0, reduction="sum").item() == 3.0  # H >= threshold
    assert entropy_loss(h, threshold=2.5, reduction="mean").item() == 1.0
    # the threshold is in total bits for both reductions
    assert entropy_loss(h, threshold=3.5, reduction="sum").item() == 0.0
    assert entropy_loss(h, threshold=3.5, reduction="mean").item() == 0.0


def test_entropy_loss_below_threshold_has_zero_gradient() -> None:
    h = (torch.rand(16, 6, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1).double()
    leaf = h.clone().requires_grad_(True)
    entropy_loss(leaf, threshold=1e6, reduction="sum").backward()
    assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(h))
    leaf = h.clone().requires_grad_(True)
    entropy_loss(leaf, threshold=0.0, reduction="sum").backward()
    # dH/dh_bj = log2((1 - p_j) / p_j) / n
    p = h.mean(dim=0)
    expected = (torch.log2((1 - p) / p) / h.shape[0]).expand_as(h)
    assert leaf.grad is not None
    torch.testing.assert_close(leaf.grad, expected)


def test_entropy_loss_rejects_unknown_reduction() -> None:
    with pytest.raises(ValueError, match=r"entropy_reduction='max'.*'sum', 'mean'"):
        entropy_loss(torch.zeros(2, 2), reduction="max")


# ---------------------------------------------------------------- covariance


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 64, 1024])
@pytest.mark.parametrize("kind", ["binary", "real"])
def test_abs_offdiag_covariance_matches_naive(chunk_size: int, kind: str) -> None:
    if kind == "binary":
        h = _random_code()
    else:
        h = torch.randn(37, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    value, grad = _value_and_grad(lambda x: abs_offdiag_covariance(x, chunk_size), h)
    ref_value, ref_grad = _value_and_grad(_naive_abs, h)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


def test_abs_offdiag_covariance_by_hand() -> None:
    # Two bits that are equal on 4 rows, p = 1/2 each: C_01 = 1/4, so D = 2 * 1/4.
    h = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert abs_offdiag_covariance(h, chunk_size=1).item() == 0.5
    # Opposite bits: C_01 = -1/4, |.| the same.
    h[:, 1] = 1 - h[:, 0]
    assert abs_offdiag_covariance(h).item() == 0.5
    # Independent fair bits: C = 0 off the diagonal.
    assert abs_offdiag_covariance(_all_codes(3)).item() == 0.0


@pytest.mark.parametrize("chunk_size", [0, -2])
def test_abs_offdiag_covariance_rejects_bad_chunk(chunk_size: int) -> None:
    with pytest.raises(ValueError, match=f"covariance_chunk_size={chunk_size}"):
        abs_offdiag_covariance(torch.zeros(3, 3), chunk_size)


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_frobenius_offdiag_covariance_matches_naive(kind: str) -> None:
    if kind == "binary":
        h = _random_code(n=23, n_bits=13, seed=3)
    else:
        h = torch.randn(23, 13, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    value, grad = _value_and_grad(frobenius_offdiag_covariance, h)
    ref_value, ref_grad = _value_and_grad(_naive_frobenius, h)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


def test_frobenius_by_hand() -> None:
    h = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert frobenius_offdiag_covariance(h).item() == 2 * 0.25**2
    assert frobenius_offdiag_covariance(_all_codes(3)).item() == 0.0


@pytest.mark.parametrize("penalty", ["abs", "frobenius"])
def test_dependence_penalty_reductions(penalty: str) -> None:
    h = _random_code(n=31, n_bits=7, seed=5)
    naive = _naive_abs(h) if penalty == "abs" else _naive_frobenius(h)
    total = dependence_penalty(h, penalty, reduction="sum", chunk_size=3)
    mean = dependence_penalty(h, penalty, reduction="mean", chunk_size=3)
    torch.testing.assert_close(total, naive, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean, naive / (7 * 6), rtol=1e-12, atol=0)


def test_dependence_penalty_single_bit_is_zero() -> None:
    h = _random_code(n=5, n_bits=1)
    assert dependence_penalty(h, "abs", reduction="mean").item() == 0.0
    # The Gram form is a difference of two equal sums: zero up to rounding.
    assert dependence_penalty(h, "frobenius", reduction="mean").item() == pytest.approx(
        0.0, abs=1e-15
    )


def test_dependence_penalty_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"covariance_penalty='l1'.*'abs', 'frobenius'"):
        dependence_penalty(torch.zeros(3, 3), "l1")
    with pytest.raises(ValueError, match=r"covariance_reduction='avg'.*'sum', 'mean'"):
        dependence_penalty(torch.zeros(3, 3), "abs", reduction="avg")


# ---------------------------------------------------------------- code statistics


def test_code_stats_from_rates_on_hand_built_code() -> None:
    # bits: never on, always on, p = 1/4, 1/2, 3/4
    h = torch.tensor(
        [
            [0.0, 1.0, 1.0, 1.0, 1.0],
            [0.0, 1.0, 0.0, 1.0, 1.0],
            [0.0, 1.0, 0.0, 0.0, 1.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
        ]
    )
    stats = code_stats_from_rates(firing_rates(h))
    assert isinstance(stats, CodeStats)
    assert all(isinstance(value, float) for value in stats)
    assert stats.entropy_bits == pytest.approx(1.0 + 2 * H_QUARTER, abs=1e-6)
    assert stats.frac_never_on == pytest.approx(0.2)
    assert stats.frac_always_on == pytest.approx(0.2)
    assert stats.l0 == 2.5  # = mean number of ones per row: (4 + 3 + 2 + 1) / 4
    assert stats.l0 == h.sum(dim=1).mean().item()
    assert stats.burst_l0 == 1.0  # 0 + 0 + 1/4 + 1/2 + 1/4
    p = firing_rates(h)
    assert stats.burst_l0 == torch.minimum(p, 1 - p).sum().item()


# ---------------------------------------------------------------- fast paths (issue #3)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dependence_penalty_abs_binary_equals_naive_abs(reduction: str) -> None:
    h = _random_code(n=31, n_bits=7, seed=6)
    naive = _naive_abs(h) / (1 if reduction == "sum" else 7 * 6)
    value, grad = _value_and_grad(lambda x: dependence_penalty(x, "abs_binary", reduction), h)
    ref_value, ref_grad = _value_and_grad(
        lambda x: dependence_penalty(x, "abs", reduction, chunk_size=3), h
    )
    torch.testing.assert_close(value, naive, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


def test_dependence_penalty_frobenius_probe_reduction_and_scale() -> None:
    h = _random_code(n=29, n_bits=9, seed=7)
    torch.manual_seed(3)
    total = dependence_penalty(h, "frobenius_probe", reduction="sum")
    torch.manual_seed(3)
    mean = dependence_penalty(h, "frobenius_probe", reduction="mean")
    torch.testing.assert_close(mean, total / (9 * 8), rtol=1e-12, atol=0)
    # one draw is a noisy but same-scale estimate of the exact penalty
    exact = _naive_frobenius(h).item()
    assert 0.2 * exact < total.item() < 5 * exact
