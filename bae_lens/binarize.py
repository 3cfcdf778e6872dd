"""Binarisation of encoder pre-activations, with straight-through gradient estimators.

The BAE code is ``h = step(z)`` with ``step(z) = 1[z > 0]`` (arXiv 2509.20997, section 3
of the paper; ../shared/BAE_METHOD.md section 1). ``step`` has zero gradient almost
everywhere, so training replaces its derivative in the backward pass only. Estimators,
selected by name:

- ``"identity"``: straight-through, ``dL/dz = dL/dh``.
- ``"sigmoid"``: ``dL/dz = dL/dh * s(z/t) (1 - s(z/t)) / t`` with ``s`` the logistic
  sigmoid and ``t`` a temperature: the derivative of the sigmoid that ``step`` is the
  ``t -> 0`` limit of (the paper's "sigmoid approximation").
- ``"reference"``: the authors' released code computes ``dL/dz = g (1 - g)`` with
  ``g = dL/dh``; it never looks at ``z`` and is approximately the identity estimator for
  small ``|g|``. Kept, opt-in, only to reproduce released numbers.
- ``"square_wave"``: the forward pass is ``h = 1[(z mod c) < c/2]`` (period ``c``); its
  surrogate derivative is that of the first Fourier term of the square wave,
  ``1/2 + (2/pi) sin(2 pi z / c)``, i.e. ``dL/dz = dL/dh * (4/c) cos(2 pi z / c)``.
  (The released code applies the cosine to the incoming gradient instead of to ``z``.)

More-bit decode (``bits_per_feature = k > 1``): the encoder emits ``d_sae * k`` bits and
each run of ``k`` consecutive bits ``b_0 .. b_{k-1}`` becomes one value
``v = sum_i 2^i b_i / (2^k - 1)`` in ``[0, 1]``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

EstimatorName = Literal["identity", "sigmoid", "reference", "square_wave"]
ESTIMATORS: tuple[str, ...] = get_args(EstimatorName)


def check_estimator(name: str) -> None:
    """Raise a ValueError naming ``name`` and the allowed estimators if it is unknown."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator={name!r} is not one of {list(ESTIMATORS)}")


def step_code(z: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """``1[z > 0]`` in ``z``'s dtype (no gradient)."""
    return (z > 0).to(z.dtype)


def square_wave_code(z: Float[Tensor, "*shape"], period: float) -> Float[Tensor, "*shape"]:
    """``1[(z mod period) < period / 2]`` in ``z``'s dtype (no gradient)."""
    return (torch.remainder(z, period) < period / 2).to(z.dtype)


class _StepIdentity(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        return step_code(z)

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> Tensor:
        return grad_h


class _StepSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, temperature: float) -> Tensor:
        ctx.save_for_backward(z)
        ctx.temperature = temperature
        return step_code(z)

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor, None]:
        (z,) = ctx.saved_tensors
        t = ctx.temperature
        # sigmoid_backward(g, s) = g * s * (1 - s) in one fused pass
        s = torch.sigmoid(z if t == 1.0 else z / t)
        grad = torch.ops.aten.sigmoid_backward(grad_h, s)
        return grad / t if t != 1.0 else grad, None


class _StepReference(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        return step_code(z)

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> Tensor:
        # Reproduces the released code: a function of the incoming gradient only.
        return grad_h * (1 - grad_h)


class _SquareWave(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, period: float) -> Tensor:
        ctx.save_for_backward(z)
        ctx.period = period
        return square_wave_code(z, period)

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor, None]:
        (z,) = ctx.saved_tensors
        c = ctx.period
        return grad_h * (4.0 / c) * torch.cos(2 * math.pi * z / c), None


def binarize(
    z: Float[Tensor, "... n_bits"],
    estimator: str = "sigmoid",
    temperature: float = 1.0,
    period: float = 2.0,
) -> Float[Tensor, "... n_bits"]:
    """Binary code of ``z`` with the named straight-through estimator in backward.

    >>> binarize(torch.tensor([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 1.0]
    """
    if estimator == "identity":
        return _StepIdentity.apply(z)
    if estimator == "sigmoid":
        return _StepSigmoid.apply(z, temperature)
    if estimator == "reference":
        return _StepReference.apply(z)
    if estimator == "square_wave":
        return _SquareWave.apply(z, period)
    check_estimator(estimator)
    raise AssertionError("unreachable")


def bit_weights(
    bits_per_feature: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " bits_per_feature"]:
    """``[2^0, ..., 2^(k-1)] / (2^k - 1)``: the weights that turn k bits into a value in [0, 1]."""
    k = bits_per_feature
    # Built in the target dtype: float32 weights cast to float64 would be off by ~1e-8.
    return torch.pow(2.0, torch.arange(k, device=device, dtype=dtype)) / (2.0**k - 1)


def bits_to_values(
    bits: Float[Tensor, "... n_bits"], bits_per_feature: int
) -> Float[Tensor, "... d_sae"]:
    """Group consecutive runs of ``k`` bits into values ``sum_i 2^i b_i / (2^k - 1)``.

    With ``k = 1`` this is the identity.

    >>> bits_to_values(torch.tensor([[1.0, 0.0, 1.0, 1.0]]), 2).tolist()
    [[0.3333333432674408, 1.0]]
    """
    k = bits_per_feature
    if k == 1:
        return bits
    if bits.shape[-1] % k != 0:
        raise ValueError(
            f"the last dimension of bits ({bits.shape[-1]}) is not a multiple of "
            f"bits_per_feature={k}"
        )
    grouped = rearrange(bits, "... (d k) -> ... d k", k=k)
    return grouped @ bit_weights(k, bits.device, bits.dtype)
