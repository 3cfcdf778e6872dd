"""Fast covariance paths against the plain references, on values AND gradients:
"abs_binary" (bae_lens.sparse_covariance) against a dense torch.cov |C| sum, the probe
estimate of "frobenius" against the exact Frobenius penalty, and the BAE training pass
wired to both (including the single estimator node shared by all loss terms)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from sae_lens.saes.sae import TrainStepInput

from bae_lens import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.binarize import binarize
from bae_lens.penalties import (
    DEPENDENCE_PENALTIES,
    dependence_penalty,
    entropy_loss,
    frobenius_from_probes,
    frobenius_offdiag_covariance,
    frobenius_probe_offdiag_covariance,
)
from bae_lens.sparse_covariance import abs_binary_offdiag_covariance, count_matmul


def _naive_abs(h: torch.Tensor) -> torch.Tensor:
    c = torch.cov(h.T, correction=0).abs()
    return c.sum() - c.diagonal().sum()


def _naive_frobenius(h: torch.Tensor) -> torch.Tensor:
    c = torch.cov(h.T, correction=0) ** 2
    return c.sum() - c.diagonal().sum()


def _naive_probe(h: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    c = torch.cov(h.T, correction=0)
    off = c - torch.diag(c.diagonal())
    return ((off @ probes) ** 2).sum() / probes.shape[1]


def _value_and_grad(fn: Any, h: torch.Tensor, upstream: float = 1.7):
    leaf = h.clone().requires_grad_(True)
    value = fn(leaf)
    (upstream * value).backward()
    assert leaf.grad is not None
    return value.detach(), leaf.grad


def _code(n: int, n_bits: int, p: float | torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, n_bits, generator=gen) < p).to(torch.float64)


def _assert_matches_naive(h: torch.Tensor, chunk_size: int = 1024) -> None:
    value, grad = _value_and_grad(lambda x: abs_binary_offdiag_covariance(x, chunk_size), h)
    ref_value, ref_grad = _value_and_grad(_naive_abs, h)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- abs_binary


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 10, 1024])
def test_abs_binary_matches_naive_on_mixed_code(chunk_size: int) -> None:
    # n prime: C_ij = (n c_ij - a_i a_j) / n^2 is never 0 off constant bits, so the
    # float reference's signs are unambiguous.
    h = _code(37, 10, 0.3, seed=1)
    h[0], h[1] = 1.0, 0.0
    _assert_matches_naive(h, chunk_size)


@pytest.mark.parametrize("chunk_size", [2, 7, 64])
def test_abs_binary_burst_flip(chunk_size: int) -> None:
    # Half of the bits fire on > 1/2 of the rows: they are flipped internally.
    rates = torch.tensor([0.9, 0.1, 0.7, 0.3, 0.6, 0.95, 0.05, 0.5, 0.8, 0.2, 0.65, 0.4])
    h = _code(41, 12, rates, seed=2)
    assert (h.mean(dim=0) > 0.5).sum() >= 5
    _assert_matches_naive(h, chunk_size)


def test_abs_binary_constant_bits_get_zero_value_and_gradient() -> None:
    h = _code(43, 9, 0.4, seed=3)
    h[:, 2] = 0.0  # never on
    h[:, 5] = 1.0  # always on
    h[:, 7] = 0.0
    _assert_matches_naive(h, chunk_size=4)
    _, grad = _value_and_grad(abs_binary_offdiag_covariance, h)
    assert torch.equal(grad[:, [2, 5, 7]], torch.zeros(43, 3, dtype=grad.dtype))


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_abs_binary_constant_code(fill: float) -> None:
    h = torch.full((16, 8), fill, dtype=torch.float64)
    value, grad = _value_and_grad(abs_binary_offdiag_covariance, h)
    assert value.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(h))


def test_abs_binary_single_row_and_single_bit() -> None:
    value, grad = _value_and_grad(abs_binary_offdiag_covariance, _code(1, 6, 0.5))
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros(1, 6, dtype=grad.dtype))
    h = _code(13, 1, 0.5, seed=4)
    value, grad = _value_and_grad(abs_binary_offdiag_covariance, h)
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(h))


def test_abs_binary_random_sparse_code_at_realistic_l0() -> None:
    # ~8 of 512 bits on per row (p ~ 1/64) over 263 rows (prime), plus a few common bits.
    h = _code(263, 512, 1 / 64, seed=5)
    h[:, :4] = _code(263, 4, 0.7, seed=6)
    assert 5 < h.sum(dim=1).mean().item() < 15
    _assert_matches_naive(h, chunk_size=96)


def test_abs_binary_float32_and_int8_gemm_path() -> None:
    # Shapes the int8 GEMM takes (rows > 16, multiples of 8), in float32 like training.
    h = _code(101, 64, 0.2, seed=7)
    value, grad = _value_and_grad(abs_binary_offdiag_covariance, h.float())
    ref_value, ref_grad = _value_and_grad(_naive_abs, h)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref_value, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-7)


def test_abs_binary_more_rows_than_float32_counts_hold() -> None:
    # n > 4096: n^2 C no longer fits float32 exactly, the float64 path is used.
    h = _code(4099, 9, 0.3, seed=8)
    _assert_matches_naive(h, chunk_size=4)


def test_abs_binary_exact_zero_covariance_by_hand() -> None:
    # Independent fair bits: every C_ij is exactly 0 (sign 0, no gradient from the pair).
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    value, grad = _value_and_grad(abs_binary_offdiag_covariance, h)
    assert value.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(h))
    pair = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert abs_binary_offdiag_covariance(pair).item() == 0.5


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan")])
def test_abs_binary_rejects_non_binary_code(bad: float) -> None:
    h = _code(20, 5, 0.5, seed=9)
    h[3, 2] = bad
    with pytest.raises(ValueError, match=r"abs_binary.*values outside \{0, 1\}"):
        abs_binary_offdiag_covariance(h)


def test_abs_binary_rejects_bad_chunk_and_shape() -> None:
    with pytest.raises(ValueError, match="covariance_chunk_size=0"):
        abs_binary_offdiag_covariance(torch.zeros(3, 3), chunk_size=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        abs_binary_offdiag_covariance(torch.zeros(3))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dependence_penalty_abs_binary_equals_abs(reduction: str) -> None:
    h = _code(31, 7, 0.4, seed=10)
    fast = dependence_penalty(h, "abs_binary", reduction, chunk_size=3)
    plain = dependence_penalty(h, "abs", reduction, chunk_size=3)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("m", "k", "p"), [(1, 8, 8), (20, 8, 16), (33, 24, 40), (5, 3, 2)])
def test_count_matmul_is_exact(m: int, k: int, p: int) -> None:
    gen = torch.Generator().manual_seed(m)
    a = torch.randint(0, 2, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-1, 2, (k, p), generator=gen, dtype=torch.int8)
    out = count_matmul(a, b)
    assert out.dtype == torch.int32
    assert torch.equal(out, (a.long() @ b.long()).int())


# ---------------------------------------------------------------- frobenius_probe


def _hadamard(size: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_probes_with_identity_second_moment_give_exact_frobenius(kind: str) -> None:
    # R R^T / m = I for the columns of a Hadamard matrix: the estimate is exact.
    if kind == "binary":
        h = _code(29, 16, 0.3, seed=11)
    else:
        h = torch.randn(29, 16, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    probes = _hadamard(16)
    value, grad = _value_and_grad(lambda x: frobenius_from_probes(x, probes), h)
    ref_value, ref_grad = _value_and_grad(frobenius_offdiag_covariance, h)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["binary", "real"])
def test_probe_estimate_value_and_gradient_match_naive(kind: str) -> None:
    gen = torch.Generator().manual_seed(13)
    if kind == "binary":
        h = _code(37, 11, 0.25, seed=14)
    else:
        h = torch.randn(37, 11, generator=gen, dtype=torch.float64)
    probes = torch.randint(0, 2, (11, 5), generator=gen).double() * 2 - 1
    value, grad = _value_and_grad(lambda x: frobenius_from_probes(x, probes), h)
    ref_value, ref_grad = _value_and_grad(lambda x: _naive_probe(x, probes), h)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-14)


def test_probe_estimate_is_unbiased() -> None:
    h = _code(64, 12, 0.3, seed=15)
    exact = _naive_frobenius(h).item()
    gen = torch.Generator().manual_seed(16)
    draws = torch.stack(
        [frobenius_probe_offdiag_covariance(h, n_probes=8, generator=gen) for _ in range(400)]
    )
    # 400 x 8 probes: the mean is within a few standard errors of the exact value
    assert abs(draws.mean().item() - exact) < 4 * draws.std().item() / 20
    assert draws.std().item() < exact  # and single 8-probe draws are already informative


def test_probe_estimate_reproducible_with_generator_and_checks_inputs() -> None:
    h = _code(20, 6, 0.4, seed=17)
    first = frobenius_probe_offdiag_covariance(h, 4, torch.Generator().manual_seed(3))
    second = frobenius_probe_offdiag_covariance(h, 4, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="n_probes=0"):
        frobenius_probe_offdiag_covariance(h, 0)
    with pytest.raises(ValueError, match=r"probes of shape \(5, 2\)"):
        frobenius_from_probes(h, torch.ones(5, 2))


def test_dependence_penalty_knows_the_new_names() -> None:
    assert {"abs_binary", "frobenius_probe"} <= set(DEPENDENCE_PENALTIES)
    h = _code(30, 6, 0.4, seed=18)
    torch.manual_seed(0)
    value = dependence_penalty(h, "frobenius_probe", "mean")
    assert value.shape == () and value.item() >= 0


# ---------------------------------------------------------------- BAE training pass


def _training_sae(**kwargs: Any) -> BinaryAutoencoderTraining:
    kwargs.setdefault("entropy_reduction", "mean")
    kwargs.setdefault("covariance_reduction", "mean")
    cfg = BinaryAutoencoderTrainingConfig(d_in=4, d_sae=24, init_firing_rate=None, **kwargs)
    sae = BinaryAutoencoderTraining(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            param.copy_(torch.randn(param.shape, generator=gen))
    return sae


def _grads(sae: BinaryAutoencoderTraining, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = sae.training_forward_pass(
        TrainStepInput(
            sae_in=x,
            coefficients={"entropy": 0.3, "covariance": 2.5},
            dead_neuron_mask=None,
            n_training_steps=1,
            is_logging_step=False,
        )
    )
    out.loss.backward()
    return {name: param.grad.clone() for name, param in sae.named_parameters()}


def test_training_pass_abs_binary_matches_abs() -> None:
    x = torch.randn(67, 4, generator=torch.Generator().manual_seed(1))
    fast = _grads(_training_sae(covariance_penalty="abs_binary", entropy_threshold=0.0), x)
    plain = _grads(_training_sae(covariance_penalty="abs", entropy_threshold=0.0), x)
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["identity", "sigmoid", "square_wave"])
def test_training_pass_shares_one_estimator_node(estimator: str) -> None:
    # The penalties read the decoder's bits; by linearity of these estimators' backward the
    # gradients equal those of a separate binarization per term.
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    sae = _training_sae(estimator=estimator, covariance_penalty="abs")
    shared = _grads(sae, x)
    sae.zero_grad()
    z = sae.hidden_pre(x)
    cfg = sae.cfg
    bits_rec = binarize(z, estimator, cfg.estimator_temperature, cfg.square_wave_period)
    bits_pen = binarize(z, estimator, cfg.estimator_temperature, cfg.square_wave_period)
    loss = (
        (sae.decode(bits_rec) - x).pow(2).sum(dim=-1).mean()
        + 0.3 * entropy_loss(bits_pen, cfg.entropy_threshold, cfg.entropy_reduction)
        + 2.5 * dependence_penalty(bits_pen, "abs", cfg.covariance_reduction)
    )
    loss.backward()
    for name, param in sae.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(shared[name], param.grad, rtol=1e-5, atol=1e-6)
