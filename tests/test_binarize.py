"""bae_lens.binarize: forward values and surrogate gradients against naive autograd references."""

from __future__ import annotations

import math

import pytest
import torch

from bae_lens.binarize import ESTIMATORS, binarize, bits_to_values, check_estimator

# z covers both signs, exact zero and values near the square wave's edges.
Z = torch.tensor(
    [-3.0, -1.25, -0.5, -1e-3, 0.0, 1e-3, 0.4, 0.999, 1.0, 1.7, 2.5, 4.2], dtype=torch.float64
)
# A non-trivial upstream gradient dL/dh (not all ones, mixed signs, |g| > 1 somewhere).
G = torch.tensor(
    [0.3, -1.5, 2.0, 0.7, -0.2, 1.1, -0.9, 0.05, 3.0, -2.2, 0.6, -0.4], dtype=torch.float64
)


def _z() -> torch.Tensor:
    return Z.to(torch.float64).clone().requires_grad_(True)


def _g() -> torch.Tensor:
    return G.to(torch.float64)


def _grad_of(estimator: str, **kwargs: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward value and dL/dz of sum(binarize(z) * G)."""
    z = _z()
    h = binarize(z, estimator, **kwargs)
    (h * _g()).sum().backward()
    assert z.grad is not None
    return h.detach(), z.grad


def _naive_grad(surrogate) -> torch.Tensor:
    """dL/dz of sum(surrogate(z) * G) by plain autograd."""
    z = _z()
    (surrogate(z) * _g()).sum().backward()
    assert z.grad is not None
    return z.grad


def _step(z: torch.Tensor) -> torch.Tensor:
    return torch.tensor([1.0 if v > 0 else 0.0 for v in z.tolist()], dtype=torch.float64)


def _square(z: torch.Tensor, c: float) -> torch.Tensor:
    return torch.tensor(
        [1.0 if math.fmod(math.fmod(v, c) + c, c) < c / 2 else 0.0 for v in z.tolist()],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("estimator", ["identity", "sigmoid", "reference"])
def test_step_forward_values(estimator: str) -> None:
    h, _ = _grad_of(estimator)
    assert h.dtype == torch.float64
    assert torch.equal(h, _step(Z))


def test_step_is_zero_at_exactly_zero() -> None:
    for estimator in ("identity", "sigmoid", "reference"):
        assert binarize(torch.zeros(3), estimator).tolist() == [0.0, 0.0, 0.0]
        assert binarize(torch.tensor([-0.0]), estimator).tolist() == [0.0]
    assert binarize(torch.tensor([1e-30, -1e-30])).tolist() == [1.0, 0.0]


def test_identity_gradient_is_upstream() -> None:
    _, grad = _grad_of("identity")
    assert torch.equal(grad, _g())
    assert torch.equal(grad, _naive_grad(lambda z: z))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sigmoid_gradient_matches_autograd_of_sigmoid(temperature: float) -> None:
    _, grad = _grad_of("sigmoid", temperature=temperature)
    expected = _naive_grad(lambda z: torch.sigmoid(z / temperature))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


def test_sigmoid_gradient_hand_value_at_zero() -> None:
    z = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    binarize(z, "sigmoid", temperature=0.5).sum().backward()
    assert z.grad is not None
    # s(0) (1 - s(0)) / t = 0.25 / 0.5
    assert z.grad.item() == 0.5


def test_reference_gradient_is_g_times_one_minus_g() -> None:
    _, grad = _grad_of("reference")
    g = _g()
    torch.testing.assert_close(grad, g * (1 - g), rtol=0, atol=0)
    # Hand values: g = 3 -> -6, g = -1.5 -> -3.75, g = 0.3 -> 0.21.
    assert grad[8].item() == -6.0
    assert grad[1].item() == -3.75
    assert grad[0].item() == pytest.approx(0.21, abs=1e-15)
    # It never looks at z: shifting z leaves the gradient unchanged.
    z = (_z() + 10.0).detach().requires_grad_(True)
    (binarize(z, "reference") * g).sum().backward()
    assert z.grad is not None
    assert torch.equal(z.grad, grad)


@pytest.mark.parametrize("period", [2.0, 3.0])
def test_square_wave_forward_values(period: float) -> None:
    h, _ = _grad_of("square_wave", period=period)
    assert h.dtype == torch.float64
    assert torch.equal(h, _square(Z, period))


def test_square_wave_boundaries_by_hand() -> None:
    z = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5, 2.0, -0.5, -1.0, -1.5, -2.0, 3.0, 4.0])
    expected = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert binarize(z, "square_wave", period=2.0).tolist() == expected
    # period 4: on for [0, 2), off for [2, 4)
    z4 = torch.tensor([0.0, 1.99, 2.0, 3.99, 4.0, -2.0, -2.01])
    assert binarize(z4, "square_wave", period=4.0).tolist() == [1, 1, 0, 0, 1, 0, 1]


@pytest.mark.parametrize("period", [2.0, 3.0])
def test_square_wave_gradient_matches_first_fourier_term(period: float) -> None:
    _, grad = _grad_of("square_wave", period=period)
    expected = _naive_grad(lambda z: 0.5 + (2 / math.pi) * torch.sin(2 * math.pi * z / period))
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


def test_square_wave_gradient_hand_value() -> None:
    z = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    binarize(z, "square_wave", period=2.0).sum().backward()
    assert z.grad is not None
    # (4/c) cos(2 pi z / c) with c = 2: 2 cos(pi z)
    torch.testing.assert_close(z.grad, torch.tensor([2.0, 0.0, -2.0], dtype=torch.float64))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_keep_shape_and_batch_dims(estimator: str) -> None:
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    h = binarize(z, estimator)
    assert h.shape == z.shape
    h.sum().backward()
    assert z.grad is not None and z.grad.shape == z.shape
    assert torch.isfinite(z.grad).all()


def test_unknown_estimator_lists_allowed_names() -> None:
    with pytest.raises(ValueError) as info:
        binarize(torch.zeros(2), "tanh")
    message = str(info.value)
    assert "'tanh'" in message
    for name in ("identity", "sigmoid", "reference", "square_wave"):
        assert name in message
    with pytest.raises(ValueError, match="estimator='nope'"):
        check_estimator("nope")
    for name in ESTIMATORS:
        check_estimator(name)


def test_bits_to_values_k1_is_identity() -> None:
    bits = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.equal(bits_to_values(bits, 1), bits)


def test_bits_to_values_k2_by_hand() -> None:
    # runs of two bits b0 b1 -> (b0 + 2 b1) / 3
    bits = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    expected = torch.tensor([[0.0, 1 / 3, 2 / 3, 1.0]])
    torch.testing.assert_close(bits_to_values(bits, 2), expected, rtol=0, atol=1e-7)


def test_bits_to_values_k3_by_hand_float64() -> None:
    # runs of three bits -> (b0 + 2 b1 + 4 b2) / 7
    bits = torch.tensor(
        [[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]], dtype=torch.float64
    )
    values = bits_to_values(bits, 3)
    assert values.dtype == torch.float64
    expected = torch.tensor([[5 / 7, 6 / 7], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-15)


def test_bits_to_values_batch_dims_and_gradient() -> None:
    bits = torch.randint(0, 2, (2, 3, 6), dtype=torch.float64).requires_grad_(True)
    values = bits_to_values(bits, 2)
    assert values.shape == (2, 3, 3)
    values.sum().backward()
    assert bits.grad is not None
    expected = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64).repeat(3).expand(2, 3, 6)
    torch.testing.assert_close(bits.grad, expected, rtol=0, atol=1e-15)


def test_bits_to_values_rejects_width_not_divisible_by_k() -> None:
    with pytest.raises(ValueError, match=r"\(5\).*bits_per_feature=2"):
        bits_to_values(torch.zeros(4, 5), 2)
    with pytest.raises(ValueError, match="bits_per_feature=3"):
        bits_to_values(torch.zeros(7), 3)
