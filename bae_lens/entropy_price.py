"""A set's entropy price chosen from the data: the plateau of a short rate sweep
(issue 15, item 3; :mod:`bae_lens.entropy` for the estimate itself).

A BAE trained with loss ``squared error + price x H`` keeps a bit when the bit lowers the
squared error of the rows by more than ``price`` per bit of entropy. Its rate ``H(price)``
falls as the price rises. For a set made of a few strong binary directions plus noise,
``H(price)`` has three regimes:

- low prices: noise is worth coding too (a Gaussian of variance s^2 per direction pays at
  most ``2 ln 2 s^2`` per bit, its rate-distortion slope at zero rate), so ``H`` counts
  noise bits and grows with the width of the code;
- a plateau: every true bit pays for itself and no noise bit does, so ``H`` stays at the
  entropy of the true code over a range of prices;
- high prices: true bits are dropped, down to a code that no longer reconstructs anything.

The plateau is where the estimate measures the set rather than the price. It shows best
in the rate-distortion plane: a BAE at price ``lambda`` minimises ``D + lambda H``, so the
rates a sweep reaches are the vertices of the lower convex hull of its (rate, distortion)
points, each the optimum for the prices between the slopes of its two hull edges. The
plateau is the knee: the vertex that stays optimal over the widest ratio of prices
(:func:`knee`). Reading the knee off the (rate, distortion) points rather than off the
rate at each price keeps it robust to BAEs that stopped short of their optimum (a few
spare bits at a price inside the plateau move the point, not the hull). The chosen price
is the one whose BAE landed on the knee. When the knee is optimal over less than
``MIN_RATIO`` (8x) of prices the set has no clear plateau: :class:`PriceChoice` says so
(``plateau=False``) and an estimate at that price depends on the price.

Prices are on a grid relative to the set's variance per row ``V`` in the units the BAE
trains in (after :func:`bae_lens.entropy.set_scale`), from ``V/4`` down by factors of 4
(then refined around the knee by factors of 2):
a single bit can never lower the squared error by more than ``V``, so the grid has no
units of its own and the same set at 10x the scale gets the same relative grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from bae_lens.entropy import (
    drop_outlier_rows,
    estimate_entropy,
    set_scale,
    train_set_bae,
)

logger = logging.getLogger(__name__)

DEFAULT_RELATIVE_PRICES = tuple(4.0**-k for k in range(1, 8))
"""Prices as fractions of the set's variance per row: 1/4, 1/16, ..., 4^-7."""
MIN_RATIO = 8.0
"""A knee must stay the optimal rate over at least this ratio of prices (three octaves; a
smooth power-law rate-distortion curve sampled at the default grid gives ratios of 2-5)."""
EV_RESOLUTION = 0.005
"""Explained-variance differences below this are treated as noise of the held-out check."""


class SweepPoint(NamedTuple):
    """One BAE of the sweep."""

    price: float
    """In the units the BAE trains in (squared error per row, per bit)."""
    relative_price: float
    """``price / V``, V the set's variance per row in those units."""
    entropy_bits: float
    """Sum of marginal bit entropies of the whole set under this BAE."""
    explained_variance: float
    """Held-out explained variance at the end of training."""
    converged: bool
    steps: int


class PriceChoice(NamedTuple):
    """The price :func:`choose_price` picked, and why."""

    price: float
    """In the units the BAE trains in (squared error per row, per bit)."""
    relative_price: float
    """``price / V``."""
    plateau: bool
    """True when the knee is optimal over a price ratio of at least ``min_ratio``."""
    knee_bits: float
    """The knee's rate (the sweep's estimate at the sweep width)."""
    knee_explained_variance: float
    optimal_relative_prices: tuple[float, float]
    """The (lowest, highest) relative price at which the knee is the optimal rate."""
    ratio: float
    """highest / lowest of those prices."""
    points: list[SweepPoint]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "price": self.price,
            "relative_price": self.relative_price,
            "plateau": self.plateau,
            "knee_bits": round(self.knee_bits, 3),
            "knee_explained_variance": round(self.knee_explained_variance, 4),
            "optimal_relative_prices": [float(f"{p:.4g}") for p in self.optimal_relative_prices],
            "ratio": round(self.ratio, 3),
            "reason": self.reason,
            "sweep": [
                {
                    "price": p.price,
                    "relative_price": p.relative_price,
                    "entropy_bits": round(p.entropy_bits, 3),
                    "explained_variance": round(p.explained_variance, 4),
                    "converged": p.converged,
                    "steps": p.steps,
                }
                for p in self.points
            ],
        }


def set_variance(x: Float[Tensor, "n d"], normalize: str = "mean_norm",
                 outlier_factor: float | None = 10.0) -> float:  # fmt: skip
    """The variance per row, ``E ||x - mean||^2``, of the rows :func:`train_set_bae` trains
    on (outliers dropped), in its units (after ``normalize``)."""
    rows = drop_outlier_rows(x.float(), outlier_factor)
    if rows.shape[0] < 2:
        raise ValueError(f"set of {x.shape[0]} rows: need at least 2 to measure a variance")
    scale = set_scale(rows, normalize)
    rows = rows * scale
    return float((rows - rows.mean(0)).pow(2).sum(-1).mean())


def price_sweep(
    x: Float[Tensor, "n d"],
    d_sae: int,
    relative_prices: Sequence[float] = DEFAULT_RELATIVE_PRICES,
    *,
    steps: int = 1000,
    normalize: str = "mean_norm",
    seed: int = 0,
    **train_options: Any,
) -> list[SweepPoint]:
    """Train one BAE per price (early stop within ``steps``) and measure its rate on ``x``.

    ``relative_prices`` are fractions of the set's variance per row (:func:`set_variance`).
    ``train_options`` go to :func:`bae_lens.entropy.train_set_bae`."""
    if not relative_prices or any(not (p > 0 and math.isfinite(p)) for p in relative_prices):
        raise ValueError(
            f"relative_prices={list(relative_prices)!r}: need at least one finite price > 0"
        )
    variance = set_variance(x, normalize, train_options.get("outlier_factor", 10.0))
    train_options.setdefault("early_stop", True)
    points = []
    for rel in sorted(relative_prices):
        price = rel * variance
        sae = train_set_bae(x, d_sae, steps=steps, normalize=normalize, seed=seed,
                            entropy_coefficient=price, **train_options)  # fmt: skip
        est = estimate_entropy(sae, x, count_pairs=False)
        conv = sae.convergence  # type: ignore[attr-defined]
        points.append(
            SweepPoint(
                price, rel, est.entropy_bits, conv.trajectory[-1][2], conv.converged, conv.steps
            )  # fmt: skip
        )
        logger.info("price %.4g (%.2g V): %.1f bits, held-out EV %.3f, %s after %d steps",
                    price, rel, est.entropy_bits, conv.trajectory[-1][2],
                    "converged" if conv.converged else "NOT converged", conv.steps)  # fmt: skip
    return points


def knee(
    points: Sequence[SweepPoint], ev_resolution: float = EV_RESOLUTION
) -> tuple[list[SweepPoint], int, float, float]:
    """The rate-distortion knee of a sweep.

    Returns the vertices of the lower convex hull of (rate, distortion = 1 - EV) from the
    empty code (0 bits, distortion 1) to the lowest distortion, the index of the knee
    vertex in it, and the slopes (EV per bit) of the hull on either side of the knee (the
    right one ``inf`` when nothing was tried at a higher rate: no evidence of a plateau).
    A hull vertex is the optimum for every price between its two neighbouring slopes
    (price = slope x V), so the knee, the vertex with the largest ratio of left to right
    slope, is the rate that stays optimal over the widest range of prices."""
    pts = sorted(points, key=lambda p: (p.entropy_bits, -p.explained_variance))
    empty = SweepPoint(math.nan, math.nan, 0.0, 0.0, True, 0)
    hull: list[SweepPoint] = [empty]
    for p in pts:
        if p.entropy_bits <= 0 or p.explained_variance <= hull[-1].explained_variance:
            continue  # no better reconstruction for more bits: never optimal
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the chord a -> p (in distortion): not on the lower hull
            cross = (b.entropy_bits - a.entropy_bits) * (
                p.explained_variance - a.explained_variance
            ) - (p.entropy_bits - a.entropy_bits) * (b.explained_variance - a.explained_variance)
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    top = max(p.entropy_bits for p in pts)
    if len(hull) < 2 or (len(hull) == 2 and top <= hull[1].entropy_bits):
        raise ValueError(
            f"price sweep of {len(pts)} prices reaches {len(hull) - 1} useful rate-distortion "
            "point(s) and nothing beyond them; extend the grid to lower prices"
        )

    def slope(a: SweepPoint, b: SweepPoint) -> float:
        return (b.explained_variance - a.explained_variance) / (b.entropy_bits - a.entropy_bits)

    def ratio(k: int) -> tuple[float, float, float]:
        # the right slope spans at least ev_resolution of EV, so that held-out noise in the
        # tail of nearly equal reconstructions cannot make a knee of its own; past the last
        # vertex, the points tried at higher rates bought nothing, so at most ev_resolution
        right = next((p for p in hull[k + 1 :]
                      if p.explained_variance - hull[k].explained_variance >= ev_resolution),
                     None)  # fmt: skip
        left_slope = slope(hull[k - 1], hull[k])
        if right is None and k < len(hull) - 1:
            right = hull[-1]  # what all the later vertices together bought
        if right is not None:
            right_slope = slope(hull[k], right)
        elif top > hull[k].entropy_bits:
            right_slope = ev_resolution / (top - hull[k].entropy_bits)
        else:  # nothing was tried beyond this rate: no evidence of a plateau
            return 0.0, left_slope, math.inf
        return left_slope / right_slope, left_slope, right_slope

    best = max(range(1, len(hull)), key=lambda k: ratio(k)[0])
    _, left, right = ratio(best)
    return hull, best, left, right


def choose_price(points: Sequence[SweepPoint], min_ratio: float = MIN_RATIO) -> PriceChoice:
    """The price at the rate-distortion knee of a sweep (module docstring and :func:`knee`).

    The chosen price is the one whose BAE landed on the knee (a BAE trained at another price
    inside the knee's range may stop short of the optimum, with a few bits more). With a
    ratio of slopes under ``min_ratio`` the curve has no clear knee: the choice is reported
    with ``plateau=False``.

    >>> pts = [SweepPoint(p, p / 100, h, ev, True, 100) for p, h, ev in
    ...        [(0.1, 200.0, 0.951), (0.2, 90.0, 0.95), (0.4, 20.5, 0.946), (0.8, 20.0, 0.945),
    ...         (1.6, 12.0, 0.6), (3.2, 0.2, 0.01)]]
    >>> c = choose_price(pts)
    >>> c.knee_bits, c.plateau, round(c.relative_price, 4)
    (20.0, True, 0.008)
    """
    variance = next(p.price / p.relative_price for p in points if p.relative_price > 0)
    hull, k, left, right = knee(points)
    ratio = left / right
    vertex = hull[k]
    relative = vertex.relative_price
    plateau = ratio >= min_ratio
    reason = (
        f"knee at {vertex.entropy_bits:.1f} bits (EV {vertex.explained_variance:.3f}): optimal "
        f"for relative prices {right:.3g} to {left:.3g} (ratio {ratio:.1f})"
    )
    if not plateau:
        reason = (f"NO CLEAR KNEE: the best rate-distortion vertex is optimal over a price ratio "
                  f"of only {ratio:.1f} (< {min_ratio}); the estimate depends on the price. "
                  + reason)  # fmt: skip
    return PriceChoice(relative * variance, relative, plateau, vertex.entropy_bits,
                       vertex.explained_variance, (right, left), ratio,
                       sorted(points, key=lambda p: p.price), reason)  # fmt: skip


def auto_price(
    x: Float[Tensor, "n d"],
    *,
    d_sae: int = 256,
    relative_prices: Sequence[float] = DEFAULT_RELATIVE_PRICES,
    refine: int = 1,
    steps: int = 1000,
    max_rows: int | None = 20_000,
    min_ratio: float = MIN_RATIO,
    seed: int = 0,
    **train_options: Any,
) -> PriceChoice:
    """Choose the entropy price of ``x`` from a sweep of ``d_sae``-bit BAEs on at most
    ``max_rows`` rows (a random subset, seeded).

    After the sweep over ``relative_prices``, each of ``refine`` rounds adds the prices
    halfway (in log) between the knee's price and its grid neighbours, and the knee is
    found again. The price is in the units :func:`bae_lens.entropy.train_set_bae` trains
    in (same ``normalize``), so it can be passed to it as ``entropy_coefficient`` at any
    width. Cost: ``len(relative_prices) + 2 * refine`` short trainings."""
    if x.ndim != 2:
        raise ValueError(f"x of shape {tuple(x.shape)}: expected [n, d]")
    if refine < 0:
        raise ValueError(f"refine={refine!r} must be >= 0")
    if max_rows is not None and x.shape[0] > max_rows:
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=gen)[:max_rows]]
    points = price_sweep(x, d_sae, relative_prices, steps=steps, seed=seed, **train_options)
    choice = choose_price(points, min_ratio)
    for _ in range(refine):
        grid = sorted({p.relative_price for p in points})
        at = grid.index(choice.relative_price)
        extra = [math.sqrt(choice.relative_price * grid[j]) for j in (at - 1, at + 1)
                 if 0 <= j < len(grid)]  # fmt: skip
        points += price_sweep(x, d_sae, extra, steps=steps, seed=seed, **train_options)
        choice = choose_price(points, min_ratio)
    if not choice.plateau:
        logger.warning("ENTROPY PRICE: %s (chosen: %.4g)", choice.reason, choice.price)
    else:
        logger.info("entropy price %.4g: %s", choice.price, choice.reason)
    return choice
