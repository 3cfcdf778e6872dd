"""Minibatch statistics of a binary code and the BAE's training penalties.

All functions take a code ``h`` of shape ``[n, n_bits]`` (rows: tokens of one
minibatch) with entries in {0, 1} and are pure torch (../shared/BAE_METHOD.md
section 2; arXiv 2509.20997 section 3).

- Firing rate ``p_j = mean_b h_bj``.
- Entropy ``H = sum_j Hb(p_j)`` with ``Hb(p) = -p log2 p - (1 - p) log2 (1 - p)``, in
  bits: the sum of marginal entropies, an upper bound on the joint entropy of the code
  that is reached when the bits are independent. It is 0 for a bit that never fires
  AND for one that always fires.
- Dependence penalty on the population covariance ``C = (h - p)^T (h - p) / n``, by name
  (cost per step for n rows, L non-constant bits):

  - ``"abs"``: ``sum_{i != j} |C_ij|``, the released method; the plain float reference
    (any real h), ``4 n n_bits^2`` flops in column blocks.
  - ``"abs_binary"``: the same number for a 0/1 code, from exact integer co-occurrence
    counts (:mod:`bae_lens.sparse_covariance`): ``~3 n L^2`` int8 operations (about 4x the
    float32 rate on CPUs with VNNI) and ``L^2`` bytes. The fast path of ``"abs"``.
  - ``"frobenius"``: ``sum_{i != j} C_ij^2`` through the ``n x n`` Gram matrix,
    ``4 n^2 n_bits`` flops: as much as the SAE's own matmuls when ``n ~ 3 d_in``.
  - ``"frobenius_probe"``: an unbiased Hutchinson estimate of ``"frobenius"`` (value and
    gradient) from ``N_PROBES = 32`` fresh random sign probes, ``10 n n_bits m`` flops
    (a few % of an SAE step at d_in = 576). The scalable penalty; stochastic.

Reductions: ``"sum"`` is the raw quantity; ``"mean"`` divides the entropy by the
number of bits (bits per feature, in [0, 1]) and the dependence penalty by the number of
off-diagonal pairs ``n_bits (n_bits - 1)``. Means make a coefficient transfer across
widths. Both are minibatch statistics, so they are not batch-size free: a minibatch of
n rows cannot resolve firing rates below 1/n.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from bae_lens.sparse_covariance import abs_binary_offdiag_covariance

Reduction = Literal["sum", "mean"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
DependencePenalty = Literal["abs", "frobenius", "abs_binary", "frobenius_probe"]
DEPENDENCE_PENALTIES: tuple[str, ...] = get_args(DependencePenalty)

# Firing rates are clamped to [eps, 1 - eps] for the entropy's gradient only, so that
# dead and always-on bits get a finite (zero) gradient; the value stays exact.
_P_EPS = 1e-6


def firing_rates(h: Float[Tensor, "n n_bits"]) -> Float[Tensor, " n_bits"]:
    """Fraction of rows in which each bit is 1."""
    return h.mean(dim=0)


def binary_entropy_bits(p: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """``Hb(p)`` in bits, elementwise; exactly 0 at p = 0 and p = 1.

    >>> binary_entropy_bits(torch.tensor([0.0, 0.5, 1.0])).tolist()
    [0.0, 1.0, 0.0]
    """
    log2 = torch.log(torch.tensor(2.0, dtype=p.dtype, device=p.device))
    exact = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)) / log2
    pc = p.clamp(_P_EPS, 1 - _P_EPS)
    smooth = -(pc * torch.log(pc) + (1 - pc) * torch.log(1 - pc)) / log2
    # value of `exact`, gradient of `smooth`
    return exact.detach() + (smooth - smooth.detach())


def _check_reduction(reduction: str, field: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{field}={reduction!r} is not one of {list(REDUCTIONS)}")


def entropy_bits(h: Float[Tensor, "n n_bits"]) -> Float[Tensor, ""]:
    """Sum over bits of the binary entropy of each bit's minibatch firing rate (bits)."""
    return binary_entropy_bits(firing_rates(h)).sum()


def entropy_loss(
    h: Float[Tensor, "n n_bits"], threshold: float = 0.0, reduction: str = "mean"
) -> Float[Tensor, ""]:
    """Entropy penalty ``H_thr``: ``H`` if ``H >= threshold`` (in total bits), else 0.

    The hinge keeps the penalty from pushing a code below ``threshold`` bits. With
    ``reduction="mean"`` the returned value is divided by the number of bits.
    """
    _check_reduction(reduction, "entropy_reduction")
    total = entropy_bits(h)
    value = total / h.shape[-1] if reduction == "mean" else total
    # torch.where, not a Python branch: no host sync on accelerators.
    return torch.where(total >= threshold, value, torch.zeros_like(value))


def _n_pairs(n_bits: int) -> int:
    return max(n_bits * (n_bits - 1), 1)


class _AbsOffDiagonalCovariance(torch.autograd.Function):
    """``sum_{i != j} |C_ij|`` computed in column blocks; memory O(n_bits * chunk).

    Backward: ``dD/dh = (2/n) (h - p) S`` with ``S = sign(C)`` and a zero diagonal. The
    columns of ``(h - p)`` sum to zero, so the centring contributes nothing further.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, chunk_size: int) -> Tensor:
        n = h.shape[0]
        hc = h - h.mean(dim=0, keepdim=True)
        total = h.new_zeros(())
        for start in range(0, h.shape[1], chunk_size):
            block = hc.T @ hc[:, start : start + chunk_size] / n  # [n_bits, chunk]
            total = total + block.abs().sum() - block.diagonal(offset=-start).abs().sum()
        ctx.save_for_backward(hc)
        ctx.chunk_size = chunk_size
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (hc,) = ctx.saved_tensors
        n, n_bits = hc.shape
        grad = torch.empty_like(hc)
        for start in range(0, n_bits, ctx.chunk_size):
            sign = torch.sign(hc.T @ hc[:, start : start + ctx.chunk_size])  # [n_bits, chunk]
            sign.diagonal(offset=-start).zero_()
            grad[:, start : start + ctx.chunk_size] = hc @ sign
        return grad * (2.0 / n) * grad_out, None


def abs_offdiag_covariance(
    h: Float[Tensor, "n n_bits"], chunk_size: int = 1024
) -> Float[Tensor, ""]:
    """Exact ``sum_{i != j} |C_ij|`` of the population covariance, chunked.

    Time O(n * n_bits^2); memory O(n * n_bits + n_bits * chunk_size).
    """
    if chunk_size < 1:
        raise ValueError(f"covariance_chunk_size={chunk_size} must be >= 1")
    return _AbsOffDiagonalCovariance.apply(h, chunk_size)


def frobenius_offdiag_covariance(h: Float[Tensor, "n n_bits"]) -> Float[Tensor, ""]:
    """Exact ``sum_{i != j} C_ij^2`` via the Gram matrix; time O(n^2 n_bits), memory O(n^2).

    ``||C||_F^2 = ||hc^T hc||_F^2 / n^2 = ||hc hc^T||_F^2 / n^2`` and the diagonal is
    ``C_ii = sum_b hc_bi^2 / n``.
    """
    n = h.shape[0]
    hc = h - h.mean(dim=0, keepdim=True)
    gram = hc @ hc.T  # [n, n]
    diag = (hc * hc).sum(dim=0) / n  # [n_bits]
    return (gram * gram).sum() / (n * n) - (diag * diag).sum()


N_PROBES = 32
"""Random sign probes per step of "frobenius_probe"."""


class _FrobeniusProbes(torch.autograd.Function):
    """``||C_off R||_F^2 / m`` with an analytic backward (no ``n x n_bits`` temporaries).

    With ``Y = C_off R``, ``u = (h - p) R`` and ``d_k = sum_j Y_kj R_kj``:
    ``df/dh = (2 / (m n)) [(h - p) Y R^T + u Y^T - 2 (h - p) diag(d)]``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor, probes: Tensor) -> Tensor:
        n, m = h.shape[0], probes.shape[1]
        p = h.mean(dim=0)  # [n_bits]
        u = h @ probes - p @ probes  # [n, m] = (h - p) R
        variance = (h * h).sum(dim=0) / n - p * p  # C_ii (= p - p^2 for a 0/1 code)
        y = torch.addcmul(h.T @ u / n, variance[:, None], probes, value=-1)  # [n_bits, m]
        ctx.save_for_backward(h, probes, p, u, y)
        return y.square().sum() / m

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        h, probes, p, u, y = ctx.saved_tensors
        n, m = h.shape[0], probes.shape[1]
        c = 2.0 * grad_out / (m * n)
        d = (y * probes).sum(dim=1)  # [n_bits]
        hc_y = h @ y - p @ y  # [n, m] = (h - p) Y
        left = torch.cat([hc_y, u, torch.ones_like(u[:, :1])], dim=1)  # [n, 2m + 1]
        right = torch.cat([probes.T, y.T, (2 * p * d)[None, :]], dim=0) * c  # [2m + 1, n_bits]
        grad = (left @ right).addcmul_(h, (2 * c) * d, value=-1)
        return grad, None


def frobenius_from_probes(
    h: Float[Tensor, "n n_bits"], probes: Float[Tensor, "n_bits m"]
) -> Float[Tensor, ""]:
    """``||C_off R||_F^2 / m`` with ``C_off`` = C without its diagonal and ``R`` the probes.

    ``C R = h^T (h - p) R / n``, so nothing of size ``n x n_bits`` beyond ``h`` and its
    gradient is formed: time ``10 n n_bits m`` flops. When ``R R^T / m = I`` (all sign
    vectors, or the columns of a Hadamard matrix) this is exactly ``sum_{i != j} C_ij^2``.
    """
    if probes.ndim != 2 or probes.shape[0] != h.shape[1]:
        raise ValueError(
            f"probes of shape {tuple(probes.shape)} for a code of shape {tuple(h.shape)}: "
            "expected [n_bits, m]"
        )
    return _FrobeniusProbes.apply(h, probes.to(h.dtype))


def frobenius_probe_offdiag_covariance(
    h: Float[Tensor, "n n_bits"],
    n_probes: int = N_PROBES,
    generator: torch.Generator | None = None,
) -> Float[Tensor, ""]:
    """Hutchinson estimate of ``sum_{i != j} C_ij^2`` from ``n_probes`` Rademacher probes.

    ``E_r ||C_off r||^2 = tr(C_off^2) = sum_{i != j} C_ij^2`` for r with independent +-1
    entries, and r does not depend on h, so value and gradient are unbiased estimates of
    the "frobenius" penalty's; the variance falls as 1 / n_probes. Probes are fresh each
    call (torch's RNG on h's device, or ``generator``). Time ``10 n n_bits n_probes`` flops.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes={n_probes} must be >= 1")
    bits = torch.randint(
        0, 2, (h.shape[1], n_probes), device=h.device, generator=generator, dtype=torch.int8
    )
    probes = bits.to(h.dtype).mul_(2).sub_(1)  # [n_bits, m], entries +-1
    return frobenius_from_probes(h, probes)


def dependence_penalty(
    h: Float[Tensor, "n n_bits"],
    penalty: str = "frobenius",
    reduction: str = "mean",
    chunk_size: int = 1024,
) -> Float[Tensor, ""]:
    """The named dependence penalty of the code (table in the module docstring), reduced."""
    _check_reduction(reduction, "covariance_reduction")
    if penalty == "abs":
        value = abs_offdiag_covariance(h, chunk_size)
    elif penalty == "abs_binary":
        value = abs_binary_offdiag_covariance(h, chunk_size)
    elif penalty == "frobenius":
        value = frobenius_offdiag_covariance(h)
    elif penalty == "frobenius_probe":
        value = frobenius_probe_offdiag_covariance(h)
    else:
        raise ValueError(
            f"covariance_penalty={penalty!r} is not one of {list(DEPENDENCE_PENALTIES)}"
        )
    return value / _n_pairs(h.shape[-1]) if reduction == "mean" else value


class CodeStats(NamedTuple):
    """Statistics of a binary code over a set of rows (no gradient)."""

    entropy_bits: float
    """Sum of marginal bit entropies, bits."""
    frac_never_on: float
    """Fraction of bits that are 0 in every row."""
    frac_always_on: float
    """Fraction of bits that are 1 in every row."""
    l0: float
    """Mean number of ones per row."""
    burst_l0: float
    """``sum_j min(p_j, 1 - p_j)``: mean number of bits that differ from their majority state."""


@torch.no_grad()
def code_stats_from_rates(p: Float[Tensor, " n_bits"]) -> CodeStats:
    """:class:`CodeStats` from firing rates ``p``."""
    p = p.float()
    return CodeStats(
        entropy_bits=float(binary_entropy_bits(p).sum()),
        frac_never_on=float((p == 0).float().mean()),
        frac_always_on=float((p == 1).float().mean()),
        l0=float(p.sum()),
        burst_l0=float(torch.minimum(p, 1 - p).sum()),
    )
