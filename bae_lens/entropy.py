"""Entropy of a set of hidden states, estimated with a BAE (arXiv 2509.20997 section 3.1;
../shared/BAE_METHOD.md section 3, the paper's first application).

A BAE maps each member x of a set X to a binary code h(x) in {0, 1}^n_bits. With firing
rates ``p_j = |{x in X : h_j(x) = 1}| / |X|`` the estimate is

    H(X) ~ sum_j Hb(p_j)   bits,   Hb(p) = -p log2 p - (1 - p) log2 (1 - p),

the sum of marginal bit entropies: the joint entropy of the code when its bits are
independent (what the BAE's covariance penalty pushes towards), an upper bound on it
otherwise. It can never exceed n_bits, nor is it a measure of anything the code does not
see (two members with one code count as one state).

The firing counts are accumulated batch by batch (:class:`FiringCounter`), so memory does
not grow with the size of the set. :func:`train_set_bae` trains a BAE on a set held in
memory (the SAELens training step, main-job coefficients); :func:`synthetic_binary_set`
builds sets of known entropy; :mod:`bae_lens.icl` measures the in-context-learning curve.
``bae-lens entropy`` is the command-line front end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bae_lens.bae import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.binarize import bits_to_values
from bae_lens.hidden_states import typical_rows
from bae_lens.penalties import binary_entropy_bits
from bae_lens.train_step import TrainingState, train_step

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("mean_norm", "spread", "none")
"""How :func:`train_set_bae` scales a set before training (see there)."""

PAIR_LIMIT = 4096
"""Codes up to this many bits get the pairwise tree bound by default (a 4096-bit code
needs 128 MiB of pair counts)."""

DEFAULT_INFORMATIVE_THRESHOLD = 0.01
"""A bit "carries information" when Hb(p) exceeds this many bits (p in ~(0.0009, 0.9991))."""


ENTROPY_FLOOR_BITS = 0.25
"""Entropy changes below this many bits count as a plateau whatever the relative change.
Half a bit let a 1152-bit code of a 18.7-bit set stop at 1450 steps reading 21.1 bits (13%
high) while its spare bits still drained (benchmarks/results/entropy/, robustness)."""
DEFAULT_PATIENCE = 6
"""Checks over which the held-out entropy and EV must hold still. Three (150 steps) let a
2304-bit code stop with ~5 spare bits still draining (benchmarks/results/entropy/,
robustness: 24.0 bits for 18.66 at 1050 steps; the same set trained on reached 19.6)."""
COLLAPSED_EV = 0.05
"""Held-out explained variance below which a set's code is reported as collapsed."""


class Convergence(NamedTuple):
    """Whether a set's BAE had stopped changing when its training ended.

    Every ``check_every`` steps the held-out rows are encoded: their code's entropy (sum of
    marginals, bits) and explained variance go into ``trajectory``. Training has converged
    when, over the last ``patience`` checks (and the one before them), the entropy stayed
    within a range of ``tolerance`` (relative; or of ``ENTROPY_FLOOR_BITS``) and the mean
    explained variance of the newer half of those checks differs from the older half's by
    less than ``ev_tolerance`` (absolute), after every warm-up of the loss had ended. The
    explained variance is compared by halves, not by its range, because at a constant
    learning rate it jitters by about 0.01 from check to check: a range test then flagged
    estimates within 1% of the truth as not converged."""

    converged: bool
    steps: int
    """Steps trained."""
    trajectory: list[tuple[int, float, float]]
    """(step, held-out entropy bits, held-out explained variance) at each check."""
    held_out_rows: int
    """Rows monitored (0: the set was too small to hold any out; the training rows were
    monitored instead)."""
    tolerance: float
    ev_tolerance: float
    patience: int

    @property
    def collapsed(self) -> bool:
        """The last check's explained variance is below ``COLLAPSED_EV``."""
        return bool(self.trajectory) and self.trajectory[-1][2] < COLLAPSED_EV

    def to_dict(self) -> dict[str, Any]:
        return {
            "converged": self.converged,
            "collapsed": self.collapsed,
            "steps": self.steps,
            "held_out_rows": self.held_out_rows,
            "criterion": f"over the last {self.patience} checks: entropy range within "
            f"{self.tolerance:.1%} (or {ENTROPY_FLOOR_BITS} bits), mean explained variance of "
            f"the newer half within {self.ev_tolerance} of the older half's",
            "trajectory": [
                {"step": st, "entropy_bits": round(h, 2), "explained_variance": round(ev, 4)}
                for st, h, ev in self.trajectory
            ],
        }


def plateaued(
    trajectory: list[tuple[int, float, float]], tolerance: float, ev_tolerance: float, patience: int
) -> bool:
    """Whether the last ``patience`` checks of ``trajectory`` (and the one before them)
    agree within the tolerances (see :class:`Convergence`).

    >>> plateaued([(0, 90.0, 0.5), (50, 100.0, 0.9), (100, 100.5, 0.901)], 0.01, 0.005, 1)
    True
    >>> plateaued([(0, 90.0, 0.5), (50, 100.0, 0.9), (100, 100.5, 0.901)], 0.01, 0.005, 2)
    False
    >>> jitter = [(s, 20.0, 0.91 + 0.005 * (-1) ** (s // 50)) for s in range(50, 400, 50)]
    >>> plateaued(jitter, 0.01, 0.005, 6)  # EV jitters by 0.01, with no drift
    True
    """
    if len(trajectory) < patience + 1:
        return False
    window = trajectory[-(patience + 1) :]
    hs = [h for _, h, _ in window]
    evs = [ev for _, _, ev in window]
    moved = max(hs) - min(hs)
    allowed = max(tolerance * abs(sum(hs) / len(hs)), ENTROPY_FLOOR_BITS)
    half = max(len(window) // 2, 1)
    ev_drift = sum(evs[-half:]) / half - sum(evs[:half]) / half
    return moved < allowed and abs(ev_drift) < ev_tolerance


class EntropyEstimate(NamedTuple):
    """The BAE estimate of the entropy of a set, with its parts."""

    entropy_bits: float
    """sum_j Hb(p_j), bits."""
    firing_rates: Tensor
    """p_j, float64, [n_bits]."""
    n_samples: int
    """Members of the set that were encoded."""
    n_bits: int
    """Width of the code."""
    n_nonconstant: int
    """Bits with 0 < p < 1 (they fired on some members and not on others)."""
    n_informative: int
    """Bits with Hb(p) > threshold."""
    threshold: float
    """The Hb threshold used for n_informative, bits."""
    convergence: Convergence | None = None
    """How the BAE's training ended (None: the BAE was given, not trained here)."""
    tree_bound_bits: float | None = None
    """An upper bound on the code's joint entropy tighter than ``entropy_bits``: the sum of
    marginals less the pairwise mutual information along a maximum spanning tree of the
    bits (Chow-Liu): the entropy of the best tree-shaped model of the code, which no joint
    entropy exceeds. None when pairs were not counted (``n_bits`` above the pair limit)."""

    @property
    def overshoot_bits(self) -> float | None:
        """``entropy_bits - tree_bound_bits``: a lower bound on the total correlation of the
        code, i.e. on how far the sum of marginals overcounts."""
        return None if self.tree_bound_bits is None else self.entropy_bits - self.tree_bound_bits

    def to_dict(self, with_rates: bool = True) -> dict[str, Any]:
        """JSON-ready dict (firing rates as a list when ``with_rates``)."""
        out: dict[str, Any] = {
            "entropy_bits": round(self.entropy_bits, 4),
            "n_samples": self.n_samples,
            "n_bits": self.n_bits,
            "n_nonconstant": self.n_nonconstant,
            "n_informative": self.n_informative,
            "threshold": self.threshold,
        }
        if self.tree_bound_bits is not None:
            out["tree_bound_bits"] = round(self.tree_bound_bits, 4)
            out["overshoot_lower_bound_bits"] = round(self.entropy_bits - self.tree_bound_bits, 4)
        if self.convergence is not None:
            out["convergence"] = self.convergence.to_dict()
        if with_rates:
            out["firing_rates"] = [round(float(p), 6) for p in self.firing_rates]
        return out


class FiringCounter:
    """Streaming firing counts of a binary code: memory O(n_bits), whatever the set size.

    >>> counter = FiringCounter(2)
    >>> counter.update(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    >>> counter.update(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    >>> counter.estimate().entropy_bits
    2.0
    """

    def __init__(self, n_bits: int, count_pairs: bool = False):
        if not isinstance(n_bits, int) or n_bits < 1:
            raise ValueError(f"n_bits={n_bits!r} must be an integer >= 1")
        self.counts = torch.zeros(n_bits, dtype=torch.float64)
        self.pairs = torch.zeros(n_bits, n_bits, dtype=torch.float64) if count_pairs else None
        """Co-firing counts (both bits 1), when asked for: n_bits^2 memory."""
        self.n_samples = 0

    def update(self, bits: Float[Tensor, "... n_bits"]) -> None:
        """Add the 0/1 codes of a batch (any leading shape)."""
        if bits.shape[-1] != self.counts.shape[0]:
            raise ValueError(
                f"code of shape {tuple(bits.shape)}: last dimension must be "
                f"n_bits={self.counts.shape[0]}"
            )
        flat = rearrange(bits, "... n_bits -> (...) n_bits")
        self.counts += flat.sum(dim=0).to(device="cpu", dtype=torch.float64)
        if self.pairs is not None:
            f = flat.to(dtype=torch.float32)  # exact: each entry < 2^24 rows per batch
            self.pairs += (f.T @ f).to(device="cpu", dtype=torch.float64)
        self.n_samples += flat.shape[0]

    def estimate(self, threshold: float = DEFAULT_INFORMATIVE_THRESHOLD) -> EntropyEstimate:
        """The entropy estimate from the counts so far."""
        if self.n_samples == 0:
            raise ValueError("no samples were counted: the set is empty")
        if threshold < 0:
            raise ValueError(f"threshold={threshold!r} must be >= 0 (bits)")
        p = self.counts / self.n_samples
        hb = binary_entropy_bits(p)
        tree = None
        if self.pairs is not None:
            tree = float(hb.sum()) - max_spanning_tree_weight(
                pairwise_mutual_information(p, self.pairs / self.n_samples)
            )
        return EntropyEstimate(
            entropy_bits=float(hb.sum()),
            firing_rates=p,
            n_samples=self.n_samples,
            n_bits=int(p.shape[0]),
            n_nonconstant=int(((p > 0) & (p < 1)).sum()),
            n_informative=int((hb > threshold).sum()),
            threshold=threshold,
            tree_bound_bits=tree,
        )


def pairwise_mutual_information(
    p: Float[Tensor, " n_bits"], p11: Float[Tensor, "n_bits n_bits"]
) -> Float[Tensor, "n_bits n_bits"]:
    """I(h_i; h_j) in bits for every pair of binary variables with rates ``p`` and joint
    rates ``p11`` = P(h_i = 1, h_j = 1) (the diagonal is set to 0).

    >>> p = torch.tensor([0.5, 0.5], dtype=torch.float64)
    >>> pairwise_mutual_information(p, torch.tensor([[0.5, 0.5], [0.5, 0.5]]).double())[0, 1]
    tensor(1., dtype=torch.float64)
    """
    pi, pj = p[:, None], p[None, :]
    cells = (p11, pi - p11, pj - p11, 1 - pi - pj + p11)  # (1,1) (1,0) (0,1) (0,0)
    margins = ((pi, pj), (pi, 1 - pj), (1 - pi, pj), (1 - pi, 1 - pj))
    mi = torch.zeros_like(p11)
    for joint, (a, b) in zip(cells, margins, strict=True):
        joint = joint.clamp_min(0.0)
        ratio = joint / (a * b).clamp_min(1e-300)
        mi += torch.where(joint > 0, joint * torch.log2(ratio.clamp_min(1e-300)), 0.0)
    mi = mi.clamp_min(0.0)
    mi.fill_diagonal_(0.0)
    return mi


def max_spanning_tree_weight(weights: Float[Tensor, "n n"]) -> float:
    """Total weight of a maximum spanning tree (forest) of the complete graph with these
    symmetric non-negative edge weights (Prim's algorithm, O(n^2)).

    >>> max_spanning_tree_weight(torch.tensor([[0., 3., 1.], [3., 0., 2.], [1., 2., 0.]]))
    5.0
    """
    n = weights.shape[0]
    if n < 2:
        return 0.0
    w = weights.to(torch.float64)
    in_tree = torch.zeros(n, dtype=torch.bool)
    in_tree[0] = True
    best = w[0].clone()
    total = 0.0
    for _ in range(n - 1):
        candidates = torch.where(in_tree, torch.tensor(-1.0, dtype=torch.float64), best)
        j = int(candidates.argmax())
        total += float(best[j])
        in_tree[j] = True
        best = torch.maximum(best, w[j])
    return total


def _batches(data: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(data, Tensor):
        flat = rearrange(data, "... d_in -> (...) d_in")
        for start in range(0, flat.shape[0], batch_size):
            yield flat[start : start + batch_size]
    else:
        yield from data


@torch.no_grad()
def estimate_entropy(
    sae: Any,
    data: Float[Tensor, "... d_in"] | Iterable[Float[Tensor, "... d_in"]],
    *,
    batch_size: int = 4096,
    threshold: float = DEFAULT_INFORMATIVE_THRESHOLD,
    progress: bool = False,
    count_pairs: bool | None = None,
) -> EntropyEstimate:
    """Entropy (bits) of a set of hidden states under ``sae``'s code (module docstring).

    Args:
        sae: a BAE (anything with ``encode_bits(x) -> 0/1 tensor``).
        data: the set: a tensor ``[..., d_in]`` (cut into batches of ``batch_size`` rows) or
            any iterable of such batches (a generator streams a set of any size).
        threshold: Hb threshold (bits) for counting informative bits.
        progress: show a tqdm bar over batches.
        count_pairs: also count co-firing pairs for the tree bound on the joint entropy
            (``tree_bound_bits``; n_bits^2 memory and an n x n_bits^2 product per batch).
            None: when n_bits <= PAIR_LIMIT.
    """
    if not hasattr(sae, "encode_bits"):
        raise ValueError(f"sae of type {type(sae).__name__} has no encode_bits: not a BAE")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    n_bits = int(sae.cfg.d_sae * getattr(sae.cfg, "bits_per_feature", 1))
    counter = FiringCounter(n_bits, count_pairs=n_bits <= PAIR_LIMIT if count_pairs is None
                            else count_pairs)  # fmt: skip
    device = next(sae.parameters()).device
    for batch in tqdm(_batches(data, batch_size), desc="encoding", disable=not progress):
        counter.update(sae.encode_bits(batch.to(device=device, dtype=sae.dtype)))
    return counter.estimate(threshold)


@torch.no_grad()
def joint_code_entropy(
    sae: Any,
    data: Float[Tensor, "... d_in"] | Iterable[Float[Tensor, "... d_in"]],
    *,
    batch_size: int = 4096,
) -> float:
    """Plug-in entropy (bits) of the empirical distribution of whole codes: a diagnostic of
    how far the sum of marginals overcounts through dependent bits. Unlike
    :func:`estimate_entropy` its memory grows with the number of distinct codes, and it is
    at most log2(set size), so it only means something when the set is much larger than
    2^H."""
    counts: dict[bytes, int] = {}
    device = next(sae.parameters()).device
    for batch in _batches(data, batch_size):
        bits = sae.encode_bits(batch.to(device=device, dtype=sae.dtype))
        packed = bits.reshape(-1, bits.shape[-1]).bool().cpu().numpy()
        for row in packed:
            key = row.tobytes()
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        raise ValueError("no samples were counted: the set is empty")
    n = torch.tensor(list(counts.values()), dtype=torch.float64)
    p = n / n.sum()
    return float(-(p * p.log2()).sum())


def drop_outlier_rows(x: Float[Tensor, "n d"], factor: float | None = 10.0) -> Float[Tensor, "m d"]:
    """Rows whose norm is at most ``factor`` x the median norm (the residual stream's
    massive-norm first tokens would otherwise dominate a BAE's squared error; ``factor=None``
    keeps them). Rows with NaN
    or inf are dropped first and counted in a warning; ValueError if no row is finite."""
    finite = torch.isfinite(x).all(dim=-1)
    if not bool(finite.all()):
        if not bool(finite.any()):
            raise ValueError(f"all {x.shape[0]} rows contain NaN or inf")
        logger.warning("dropped %d of %d rows with NaN or inf", int((~finite).sum()), x.shape[0])
    return x[typical_rows(x, factor)]  # the harvester's rule (bae_lens.hidden_states)


def set_scale(rows: Float[Tensor, "n d_in"], normalize: str) -> float:
    """The one number a set is multiplied by before its BAE trains (see
    :func:`train_set_bae`'s ``normalize``)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not one of {list(NORMALIZATIONS)}")
    if normalize == "mean_norm":
        return math.sqrt(rows.shape[1]) / float(rows.norm(dim=-1).mean())
    if normalize == "spread":
        spread = float((rows - rows.mean(dim=0)).pow(2).sum(dim=-1).mean().sqrt())
        if spread == 0.0:
            raise ValueError("normalize='spread' needs rows that are not all equal")
        return math.sqrt(rows.shape[1]) / spread
    return 1.0


def train_set_bae(
    x: Float[Tensor, "n d_in"],
    d_sae: int,
    *,
    steps: int = 300,
    batch_size: int = 512,
    lr: float = 1e-3,
    entropy_coefficient: float = 0.05,
    covariance_coefficient: float = 30.0,
    outlier_factor: float | None = 10.0,
    normalize: str = "mean_norm",
    seed: int = 0,
    progress: bool = False,
    early_stop: bool = False,
    check_every: int = 50,
    tolerance: float = 0.01,
    ev_tolerance: float = 0.005,
    patience: int = DEFAULT_PATIENCE,
    **config: Any,
) -> BinaryAutoencoderTraining:
    """Train a BAE on a set held in memory; the returned BAE reads raw (unscaled) rows.

    Rows with norm > ``outlier_factor`` x median are left out of training. ``normalize``
    scales the rest by one number, folded into the weights afterwards: ``"mean_norm"`` to
    mean norm sqrt(d_in) (SAELens's ``expected_average_only_in``); ``"spread"`` to mean
    squared distance d_in from their mean (entropy ignores a common offset, which in a
    residual stream can dwarf the differences between members); ``"none"`` trains on the
    rows as given. Each step is :func:`bae_lens.train_step.train_step` (SAETrainer's step:
    ``training_forward_pass`` on a random minibatch, Adam with gradient clipping at 1, the
    config's coefficient warm-ups) at a constant learning rate. Defaults are the main job's
    coefficients (entropy 0.05, covariance 30 per bit). ``config`` passes further
    :class:`BinaryAutoencoderTrainingConfig` fields (``l0_coefficient``, warm-ups, ...).

    The loss is squared error per row (summed over d_in) + entropy_coefficient x H (bits per
    row), so a bit survives when it lowers the squared error of the rows it splits by more
    than ``entropy_coefficient`` per bit of entropy: the estimate is the rate of the code
    at that price, in the units the BAE sees. A scale-free price does not exist: scaling a
    set to a fixed size makes each of r equally important directions worth ~1/r of it, so a
    fixed price drops true bits of sets with many of them (benchmarks/results/entropy/).

    Convergence: up to 10% of the rows (at most 4096, only when the rest still fill a
    minibatch) are held out, and every ``check_every`` steps their code's entropy and
    explained variance are recorded (:class:`Convergence`, stored as ``sae.convergence``).
    With ``early_stop`` training ends as soon as both plateau, else after ``steps`` steps;
    either way a BAE that had not converged is reported with a warning.
    """
    if x.ndim != 2:
        raise ValueError(f"x of shape {tuple(x.shape)}: expected [n, d_in]")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps={steps!r} must be >= 1 and batch_size={batch_size!r} >= 2")
    train = drop_outlier_rows(x.float(), outlier_factor)
    if train.shape[0] < batch_size:
        raise ValueError(
            f"set of {x.shape[0]} rows ({train.shape[0]} after dropping outliers) is too small "
            f"for a BAE trained on minibatches of batch_size={batch_size}: a minibatch cannot "
            f"resolve firing rates below 1/batch_size; pass a larger set or a smaller batch_size"
        )
    for name, value in (("check_every", check_every), ("patience", patience)):
        if value < 1:
            raise ValueError(f"{name}={value!r} must be >= 1")
    scale = set_scale(train, normalize)
    torch.manual_seed(seed)
    train = train[torch.randperm(train.shape[0])] * scale
    n_val = min(train.shape[0] // 10, 4096)
    if train.shape[0] - n_val < batch_size:
        n_val = 0
    val, train = (
        (train[:n_val], train[n_val:]) if n_val else (train[: min(4096, len(train))], train)
    )
    cfg = BinaryAutoencoderTrainingConfig(
        d_in=train.shape[1],
        d_sae=d_sae,
        entropy_coefficient=entropy_coefficient,
        covariance_coefficient=covariance_coefficient,
        **config,
    )
    sae = BinaryAutoencoderTraining(cfg)
    state = TrainingState.for_sae(sae, lr=lr, n_steps=steps)
    steps_per_epoch = train.shape[0] // batch_size
    order = torch.randperm(train.shape[0])
    warm = max(cfg.entropy_start_step + cfg.entropy_warm_up_steps, cfg.covariance_warm_up_steps,
               cfg.l0_warm_up_steps)  # fmt: skip
    trajectory: list[tuple[int, float, float]] = []
    done = 0
    for step in tqdm(range(steps), desc=f"BAE d_sae={d_sae}", disable=not progress):
        if step % check_every == 0 and step > 0:
            trajectory.append((step, *_held_out_check(sae, val)))
            if (
                early_stop
                and step >= warm
                and plateaued(trajectory, tolerance, ev_tolerance, patience)
            ):
                break
        done = step + 1
        if step > 0 and step % steps_per_epoch == 0:
            order = torch.randperm(train.shape[0])  # a new epoch
        start = (step % steps_per_epoch) * batch_size
        batch = train[order[start : start + batch_size]]
        train_step(sae, batch, state)
    if not trajectory or trajectory[-1][0] != done:
        trajectory.append((done, *_held_out_check(sae, val)))
    converged = done >= warm and plateaued(trajectory, tolerance, ev_tolerance, patience)
    sae.convergence = Convergence(  # type: ignore[attr-defined]
        converged, done, trajectory, n_val, tolerance, ev_tolerance, patience
    )
    if trajectory[-1][2] < COLLAPSED_EV:
        logger.warning(
            "ENTROPY ESTIMATE FROM A COLLAPSED CODE (d_sae=%d): held-out explained variance "
            "%.3f, entropy %.1f bits. The price is too high for this set at this scale; the "
            "estimate measures the price, not the set.",
            d_sae, trajectory[-1][2], trajectory[-1][1],
        )  # fmt: skip
    if not converged:
        last = trajectory[-(patience + 1) :]
        logger.warning(
            "ENTROPY ESTIMATE NOT CONVERGED after %d steps (d_sae=%d): held-out entropy went "
            "%s bits over the last %d checks; the estimate is not trustworthy. Train longer "
            "(more steps) or check the price and learning rate.",
            done, d_sae, " -> ".join(f"{h:.1f}" for _, h, _ in last), len(last) - 1,
        )  # fmt: skip
    if scale != 1.0:
        sae.fold_activation_norm_scaling_factor(scale)
    sae.eval()
    return sae


@torch.no_grad()
def _held_out_check(sae: BinaryAutoencoderTraining, val: Tensor) -> tuple[float, float]:
    """(entropy bits, explained variance) of ``val`` (scaled rows) under ``sae``."""
    bits = sae.encode_bits(val)
    recon = sae.decode(bits_to_values(bits, sae.cfg.bits_per_feature))
    ev = 1 - float((val - recon).pow(2).sum() / (val - val.mean(0)).pow(2).sum().clamp_min(1e-12))
    return float(binary_entropy_bits(bits.double().mean(0)).sum()), ev


def estimate_set_entropy(
    x: Float[Tensor, "n d_in"],
    d_sae: int,
    *,
    threshold: float = DEFAULT_INFORMATIVE_THRESHOLD,
    progress: bool = False,
    **train_options: Any,
) -> tuple[EntropyEstimate, BinaryAutoencoderTraining]:
    """Train a BAE on ``x`` (:func:`train_set_bae`) and estimate the entropy of ``x`` with it.

    Every row is encoded, outliers included: they are members of the set.
    """
    train_options.setdefault("early_stop", True)
    sae = train_set_bae(x, d_sae, progress=progress, **train_options)
    est = estimate_entropy(sae, x, threshold=threshold, progress=progress)
    return est._replace(convergence=sae.convergence), sae


# ---------------------------------------------------------------------------- synthetic sets


class SyntheticSet(NamedTuple):
    """Points ``x = c D + noise`` for codes c of r independent fair bits: r bits of entropy."""

    x: Float[Tensor, "n d"]
    codes: Float[Tensor, "n r"]
    directions: Float[Tensor, "r d"]
    true_entropy_bits: float


def synthetic_binary_set(
    n: int, d: int, r: int, *, noise: float = 0.05, seed: int = 0
) -> SyntheticSet:
    """``n`` points in R^d carrying exactly r bits (section 3.1's synthetic check).

    Codes c in {0, 1}^r have independent fair bits; they are mapped through r random unit
    directions (rows of D) and isotropic Gaussian noise of standard deviation ``noise`` per
    coordinate is added. The entropy of the code is r bits; the entropy of a finite sample
    is at most log2(n), so r should stay well below log2(n) for the set to carry r bits.
    """
    for field, value in (("n", n), ("d", d), ("r", r)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}={value!r} must be an integer >= 1")
    if noise < 0:
        raise ValueError(f"noise={noise!r} must be >= 0")
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(r, d, generator=gen)
    directions = directions / directions.norm(dim=1, keepdim=True)
    codes = torch.randint(0, 2, (n, r), generator=gen).float()
    x = codes @ directions + noise * torch.randn(n, d, generator=gen)
    return SyntheticSet(x, codes, directions, float(r))


# ----------------------------------------------------------------------- real-model helpers


def entropy_by_layer(
    states: dict[str, Float[Tensor, "n_seq pos d"]],
    *,
    sae: Any = None,
    expansion: int = 4,
    threshold: float = DEFAULT_INFORMATIVE_THRESHOLD,
    per_position: bool = False,
    seed: int = 0,
    **train_options: Any,
) -> dict[str, dict[str, Any]]:
    """Entropy of each hook's token states ``[n_seq, pos, d]`` (BOS already dropped), from
    ``sae`` or from a BAE trained on the set (:func:`train_set_bae` with ``train_options``);
    ``per_position`` adds the entropy at each position."""
    results: dict[str, dict[str, Any]] = {}
    for hook, x in states.items():
        bae = sae
        if bae is None:
            rows = rearrange(x, "seq pos d -> (seq pos) d")
            train_options.setdefault("early_stop", True)
            bae = train_set_bae(
                rows, expansion * x.shape[-1], seed=seed, progress=True, **train_options
            )
        est = estimate_entropy(bae, x, threshold=threshold)
        est = est._replace(convergence=getattr(bae, "convergence", None) if sae is None else None)
        entry = est.to_dict()
        if per_position:
            entry["per_position_bits"] = [
                round(estimate_entropy(bae, x[:, i], threshold=threshold).entropy_bits, 3)
                for i in tqdm(range(x.shape[1]), desc="positions")
            ]
        results[hook] = entry
        logger.info(
            "%s: H = %.1f bits, informative %d/%d over %d tokens",
            hook, est.entropy_bits, est.n_informative, est.n_bits, est.n_samples,
        )  # fmt: skip
    return results
