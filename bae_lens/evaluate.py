"""Splice-in evaluation of any SAELens SAE at its hook (../shared/BAE_METHOD.md section 4).

On held-out token sequences, three forward passes per batch: clean, with the hook's
activation replaced by the SAE's reconstruction ("spliced"), and with it replaced by
zeros. Position 0 (BOS) is never replaced and never counted in activation metrics: its
residual is a norm outlier, and SAELens training excludes special tokens.

Formulas (x: hook activation of one token, x^ its reconstruction, sums over tokens):
- CE loss recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean), CE the mean
  next-token cross-entropy (nats) over every predicted position.
- KL_spliced = mean over positions of KL(P_clean || P_spliced) (nats);
  KL score = (KL_zero - KL_spliced) / KL_zero.
- explained variance = 1 - sum ||x - x^||^2 / sum ||x - mean(x)||^2 (pooled).
- MSE = mean over tokens and dimensions of (x - x^)^2.
- L0 = mean number of nonzero code entries per token (ones, for a binary code).
- firing rate p_j = fraction of tokens on which feature j is nonzero; dead = p_j = 0;
  dense at f = p_j > f; burst L0 = sum_j min(p_j, 1 - p_j) (bits away from their
  majority state); entropy = sum_j Hb(p_j) bits. For a BAE these use the raw bits
  (d_sae * bits_per_feature of them).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm

from bae_lens.hooks import sae_hook_name, splice, zero_ablate
from bae_lens.penalties import code_stats_from_rates

logger = logging.getLogger(__name__)

DENSE_THRESHOLDS = (0.01, 0.1, 0.5)


@dataclass
class SpliceMetrics:
    """What :func:`evaluate_sae` measured (see the module docstring for formulas)."""

    hook_name: str
    n_tokens: int
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_loss_recovered: float
    kl_spliced: float
    kl_zero_ablation: float
    kl_score: float
    explained_variance: float
    mse: float
    l0: float
    burst_l0: float
    entropy_bits: float
    n_features: int
    n_dead: int
    n_always_on: int
    n_dense: dict[str, int]
    firing_rates: list[float] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """All scalar metrics (no per-feature list)."""
        out = asdict(self)
        out.pop("firing_rates")
        return out


def build_eval_tokens(
    tokenizer: Any, texts: list[str], context_size: int, max_sequences: int, bos_token_id: int
) -> Tensor:
    """Concatenate ``texts`` and cut into ``[n, context_size]`` rows, each starting with BOS."""
    if context_size < 2:
        raise ValueError(f"context_size={context_size} must be >= 2")
    body = context_size - 1
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= body * max_sequences:
            break
    n = min(len(ids) // body, max_sequences)
    if n == 0:
        raise ValueError(
            f"evaluation text has {len(ids)} tokens: fewer than one sequence of {body}"
        )
    rows = torch.tensor(ids[: n * body]).reshape(n, body)  # [n, context_size - 1]
    bos = torch.full((n, 1), bos_token_id, dtype=rows.dtype)
    return torch.cat([bos, rows], dim=1)


def _next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed next-token cross-entropy over all predicted positions."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum"
    )


def _kl_sum(clean_logprobs: Tensor, logits: Tensor) -> Tensor:
    logprobs = logits.float().log_softmax(-1)
    return (clean_logprobs.exp() * (clean_logprobs - logprobs)).sum()


def _code(sae: SAE[Any], x: Tensor) -> Tensor:
    """The code whose firing statistics are reported: raw bits for a BAE."""
    encode_bits = getattr(sae, "encode_bits", None)
    return encode_bits(x) if callable(encode_bits) else sae.encode(x)


@torch.no_grad()
def evaluate_sae(
    model: Any,
    sae: SAE[Any],
    tokens: Tensor,
    hook_name: str | None = None,
    batch_size: int = 8,
) -> SpliceMetrics:
    """Splice ``sae`` into ``model`` at its hook on ``tokens`` ``[n, ctx]`` and measure."""
    hook = sae_hook_name(sae, hook_name)
    if hook not in model.hook_dict:
        raise ValueError(f"hook_name={hook!r} is not a hook of the model")
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)}: need [n >= 1, ctx >= 2]")
    sums: dict[str, Any] = dict.fromkeys(("ce_c", "ce_s", "ce_z", "kl_s", "kl_z", "sq"), 0.0)
    acts_sum = acts_sq_sum = None
    fire_counts: Tensor | None = None
    n_act = n_pred = 0
    l0_sum = 0.0
    cache: dict[str, Tensor] = {}

    def store(act: Tensor, hook: Any = None) -> Tensor:
        cache["x"] = act
        return act

    sae.eval()
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="evaluate", leave=False):
        batch = tokens[start : start + batch_size].to(sae.device)
        clean = model.run_with_hooks(batch, fwd_hooks=[(hook, store)])
        spliced = model.run_with_hooks(batch, fwd_hooks=splice(sae, hook, keep_first_position=True))
        zero = model.run_with_hooks(batch, fwd_hooks=zero_ablate(hook, keep_first_position=True))
        clean_logprobs = clean.float().log_softmax(-1)
        sums["ce_c"] += _next_token_ce(clean, batch)
        sums["ce_s"] += _next_token_ce(spliced, batch)
        sums["ce_z"] += _next_token_ce(zero, batch)
        sums["kl_s"] += _kl_sum(clean_logprobs[:, :-1], spliced[:, :-1])
        sums["kl_z"] += _kl_sum(clean_logprobs[:, :-1], zero[:, :-1])
        n_pred += batch.shape[0] * (batch.shape[1] - 1)

        x = cache["x"][:, 1:].flatten(0, 1).float()  # [batch*(pos-1), d_in], BOS dropped
        recon = sae.decode(sae.encode(x)).float()
        code = (_code(sae, x) != 0).float()
        sums["sq"] += (x - recon).pow(2).sum()
        acts_sum = x.sum(0) if acts_sum is None else acts_sum + x.sum(0)
        acts_sq_sum = (x * x).sum() if acts_sq_sum is None else acts_sq_sum + (x * x).sum()
        counts = code.sum(0)
        fire_counts = counts if fire_counts is None else fire_counts + counts
        l0_sum += float(code.sum())
        n_act += x.shape[0]

    assert acts_sum is not None and acts_sq_sum is not None and fire_counts is not None
    total_var = float(acts_sq_sum - acts_sum.pow(2).sum() / n_act)
    ce = {k: float(sums[k]) / n_pred for k in ("ce_c", "ce_s", "ce_z")}
    kl_s, kl_z = float(sums["kl_s"]) / n_pred, float(sums["kl_z"]) / n_pred
    rates = fire_counts / n_act
    stats = code_stats_from_rates(rates)
    ce_gap = ce["ce_z"] - ce["ce_c"]
    return SpliceMetrics(
        hook_name=hook,
        n_tokens=n_act,
        ce_clean=ce["ce_c"],
        ce_spliced=ce["ce_s"],
        ce_zero_ablation=ce["ce_z"],
        ce_loss_recovered=(ce["ce_z"] - ce["ce_s"]) / ce_gap if ce_gap != 0 else float("nan"),
        kl_spliced=kl_s,
        kl_zero_ablation=kl_z,
        kl_score=(kl_z - kl_s) / kl_z if kl_z != 0 else float("nan"),
        explained_variance=1 - float(sums["sq"]) / total_var if total_var > 0 else float("nan"),
        mse=float(sums["sq"]) / (n_act * sae.cfg.d_in),
        l0=l0_sum / n_act,
        burst_l0=stats.burst_l0,
        entropy_bits=stats.entropy_bits,
        n_features=int(rates.numel()),
        n_dead=int((rates == 0).sum()),
        n_always_on=int((rates == 1).sum()),
        n_dense={f"{t:g}": int((rates > t).sum()) for t in DENSE_THRESHOLDS},
        firing_rates=rates.cpu().tolist(),
    )


def plot_firing_rates(metrics: SpliceMetrics, path: str, title: str = "") -> None:
    """Histogram of log10 firing rates with the dead count and the dense lines marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = torch.tensor(metrics.firing_rates)
    alive = rates[rates > 0]
    fig, ax = plt.subplots(figsize=(7, 4))
    if alive.numel():
        ax.hist(alive.log10().numpy(), bins=60, color="#3b6ea8")
    for t in DENSE_THRESHOLDS:
        ax.axvline(torch.tensor(t).log10().item(), color="#b33", ls="--", lw=1)
        ax.text(torch.tensor(t).log10().item(), ax.get_ylim()[1] * 0.95, f" {t:g}", color="#b33")
    ax.set_xlabel("log10 firing rate (fraction of tokens)")
    ax.set_ylabel("features")
    ax.set_title(
        f"{title}\n{metrics.n_features} features, {metrics.n_dead} dead, "
        f"{metrics.n_always_on} always on, {metrics.n_tokens} tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
