"""Sets of hidden-state-like vectors whose entropy is known exactly, for checking the BAE
entropy estimate (issue 15; :func:`bae_lens.entropy.synthetic_binary_set` is the fair-bit
special case).

Every set is ``x = scale * (c D + noise)``: a binary code ``c`` of r bits mapped through r
random unit directions (rows of D) into R^d, plus isotropic Gaussian noise of standard
deviation ``noise`` per coordinate. Two kinds of code:

- independent bits with the given firing rates: joint entropy ``sum_i Hb(p_i)``;
- a Markov chain of fair bits, ``c_0`` fair and ``c_i = c_{i-1} xor f_i`` with
  ``f_i ~ Bernoulli(flip)``: every bit is fair (sum of marginals r bits), but the joint
  entropy is ``1 + (r - 1) Hb(flip)``. The chain is a tree, so the pairwise (Chow-Liu)
  bound of :class:`bae_lens.entropy.EntropyEstimate` is exact for it.

The entropy of a finite sample is at most log2(n), so the code's entropy should stay well
below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor


def binary_entropy(p: float) -> float:
    """Hb(p) in bits.

    >>> binary_entropy(0.5), round(binary_entropy(0.1), 4)
    (1.0, 0.469)
    """
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


class KnownSet(NamedTuple):
    """A synthetic set and the entropy of its code."""

    x: Float[Tensor, "n d"]
    codes: Float[Tensor, "n r"]
    directions: Float[Tensor, "r d"]
    joint_bits: float
    """Entropy of the code (the set's true entropy)."""
    marginal_bits: float
    """Sum of the code bits' marginal entropies (equal to joint_bits when independent)."""


def _check(n: int, d: int, r: int, noise: float, scale: float) -> None:
    for field, value in (("n", n), ("d", d), ("r", r)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}={value!r} must be an integer >= 1")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise={noise!r} must be finite and >= 0")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale={scale!r} must be finite and > 0")


def _embed(
    codes: Tensor, d: int, noise: float, scale: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    directions = torch.randn(codes.shape[1], d, generator=gen)
    directions = directions / directions.norm(dim=1, keepdim=True)
    x = codes @ directions + noise * torch.randn(codes.shape[0], d, generator=gen)
    return scale * x, directions


def independent_bits_set(
    n: int, d: int, rates: Sequence[float], *, noise: float = 0.05, scale: float = 1.0,
    seed: int = 0,
) -> KnownSet:  # fmt: skip
    """Independent bits firing at ``rates`` (each in (0, 1)).

    >>> s = independent_bits_set(1000, 8, [0.5, 0.5], noise=0.0)
    >>> s.x.shape, s.joint_bits, s.marginal_bits
    (torch.Size([1000, 8]), 2.0, 2.0)
    """
    _check(n, d, len(rates), noise, scale)
    if any(not (0.0 < p < 1.0) for p in rates):
        raise ValueError(f"rates={list(rates)!r}: every rate must lie in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    p = torch.tensor([float(q) for q in rates])
    codes = (torch.rand(n, len(rates), generator=gen) < p).float()
    x, directions = _embed(codes, d, noise, scale, gen)
    total = sum(binary_entropy(float(q)) for q in rates)
    return KnownSet(x, codes, directions, total, total)


def markov_chain_set(
    n: int, d: int, r: int, flip: float, *, noise: float = 0.05, scale: float = 1.0,
    seed: int = 0,
) -> KnownSet:  # fmt: skip
    """A chain of r fair bits, each the previous one flipped with probability ``flip``.

    >>> s = markov_chain_set(1000, 8, 3, 0.5, noise=0.0)
    >>> s.joint_bits, s.marginal_bits
    (3.0, 3.0)
    """
    _check(n, d, r, noise, scale)
    if not (0.0 <= flip <= 0.5):
        raise ValueError(f"flip={flip!r} must lie in [0, 0.5]")
    gen = torch.Generator().manual_seed(seed)
    first = torch.rand(n, 1, generator=gen) < 0.5
    flips = torch.rand(n, r - 1, generator=gen) < flip
    # c_i = c_0 xor f_1 xor ... xor f_i: a cumulative parity of the flips
    parity = torch.cumsum(flips.long(), dim=1) % 2
    codes = torch.cat([first.long(), (first.long() + parity) % 2], dim=1).float()
    x, directions = _embed(codes, d, noise, scale, gen)
    return KnownSet(x, codes, directions, 1.0 + (r - 1) * binary_entropy(flip), float(r))
