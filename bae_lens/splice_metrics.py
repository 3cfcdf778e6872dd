"""The numbers of a splice-in evaluation: accumulate, finish, tabulate, plot, write.

:mod:`bae_lens.evaluate` runs the clean, zero-ablated and spliced passes and feeds each
dictionary's running sums (:class:`MetricAccumulator`) here; the formulas are stated in
that module's docstring (../shared/BAE_METHOD.md section 4).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens.evals import ExplainedVarianceCalculator
from torch import Tensor

from bae_lens.penalties import code_stats_from_rates

DENSE_THRESHOLDS = (0.01, 0.1, 0.5)


@dataclass
class SpliceMetrics:
    """What :func:`evaluate_sae` measured (see the module docstring for formulas)."""

    hook_name: str
    """Output hook: where the reconstruction was spliced in."""
    input_hook_name: str
    """Where the dictionary read its input (= hook_name except for transcoders)."""
    n_tokens: int
    n_outliers: int
    """Non-BOS positions left clean and uncounted as massive activations."""
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_loss_recovered: float
    kl_spliced: float
    kl_zero_ablation: float
    kl_score: float
    explained_variance: float
    mse: float
    mse_per_token: float
    l0: float
    burst_l0: float
    entropy_bits: float
    n_features: int
    n_dead: int
    n_always_on: int
    n_dense: dict[str, int]
    """Features with firing rate > f, keyed by f ("0.01", "0.1", "0.5")."""
    firing_rates: list[float] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """All scalar metrics (no per-feature list)."""
        out = asdict(self)
        out.pop("firing_rates")
        return out


class MetricAccumulator:
    """Running sums for one dictionary."""

    def __init__(self) -> None:
        self.ev = ExplainedVarianceCalculator()
        self.ce = 0.0
        self.kl = 0.0
        self.sq = 0.0
        self.fire: Tensor | None = None
        self.n = 0
        self.n_outliers = 0

    def add_activations(
        self,
        target: Float[Tensor, "n d_out"],
        recon: Float[Tensor, "n d_out"],
        code: Float[Tensor, "n n_features"],
    ) -> None:
        """``target``, ``recon`` ``[n, d_out]``; ``code`` ``[n, n_features]``, BOS dropped."""
        self.ev.add_batch(sae_output=recon, hidden_acts=target)
        self.sq += float((target - recon).pow(2).sum())
        counts = (code != 0).sum(0).double().cpu()
        self.fire = counts if self.fire is None else self.fire + counts
        self.n += target.shape[0]


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else float("nan")


def code_statistics(rates: Float[Tensor, " n_features"]) -> dict[str, Any]:
    """L0, burst L0, entropy (bits), feature, dead, always-on and dense counts of a code
    whose features fire at ``rates`` (fractions of tokens); formulas in the module doc.

    >>> code_statistics(torch.tensor([0.0, 1.0, 0.25]))["burst_l0"]
    0.25
    """
    stats = code_stats_from_rates(rates)
    return {
        "l0": stats.l0,
        "burst_l0": stats.burst_l0,
        "entropy_bits": stats.entropy_bits,
        "n_features": int(rates.numel()),
        "n_dead": int((rates == 0).sum()),
        "n_always_on": int((rates == 1).sum()),
        "n_dense": {f"{t:g}": int((rates > t).sum()) for t in DENSE_THRESHOLDS},
    }


def finish_metrics(
    acc: MetricAccumulator,
    hooks: tuple[str, str],
    d_out: int,
    ce_clean: float,
    ce_zero: float,
    kl_zero: float,
    n_pred: int,
) -> SpliceMetrics:
    if acc.fire is None:  # unreachable after _check_inputs: at least one batch ran
        raise ValueError("no tokens were evaluated")
    rates = acc.fire / acc.n
    stats = code_statistics(rates)
    ce_spliced, kl_spliced = acc.ce / n_pred, acc.kl / n_pred
    return SpliceMetrics(
        hook_name=hooks[1],
        input_hook_name=hooks[0],
        n_tokens=acc.n,
        n_outliers=acc.n_outliers,
        ce_clean=ce_clean,
        ce_spliced=ce_spliced,
        ce_zero_ablation=ce_zero,
        ce_loss_recovered=_ratio(ce_zero - ce_spliced, ce_zero - ce_clean),
        kl_spliced=kl_spliced,
        kl_zero_ablation=kl_zero,
        kl_score=_ratio(kl_zero - kl_spliced, kl_zero),
        explained_variance=acc.ev.compute(),
        mse=acc.sq / (acc.n * d_out),
        mse_per_token=acc.sq / acc.n,
        firing_rates=rates.tolist(),
        **stats,
    )


TABLE_COLUMNS = (
    ("hook", "hook_name", "{}"),
    ("L0", "l0", "{:.1f}"),
    ("burst L0", "burst_l0", "{:.1f}"),
    ("CE rec.", "ce_loss_recovered", "{:.3f}"),
    ("KL score", "kl_score", "{:.3f}"),
    ("KL (nats)", "kl_spliced", "{:.4f}"),
    ("EV", "explained_variance", "{:.3f}"),
    ("MSE", "mse", "{:.4g}"),
    ("entropy (bits)", "entropy_bits", "{:.0f}"),
    ("features", "n_features", "{}"),
    ("dead", "n_dead", "{}"),
    (">1%", "n_dense.0.01", "{}"),
    (">10%", "n_dense.0.1", "{}"),
    (">50%", "n_dense.0.5", "{}"),
)


def _cell(summary: dict[str, Any], key: str, fmt: str) -> str:
    value: Any = summary
    for part in key.split(".", 1):
        value = value[part]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return fmt.format(value)


def metrics_table(rows: Mapping[str, SpliceMetrics | dict[str, Any]], extra: str = "") -> str:
    """A markdown table, one row per dictionary (``extra``: a summary key to add as a column)."""
    columns = list(TABLE_COLUMNS) + ([(extra, extra, "{}")] if extra else [])
    lines = [
        "| dictionary | " + " | ".join(c[0] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, metrics in rows.items():
        summary = metrics.summary() if isinstance(metrics, SpliceMetrics) else metrics
        cells = [_cell(summary, key, fmt) for _, key, fmt in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        ax.axvline(math.log10(t), color="#b33", ls="--", lw=1)
        ax.text(math.log10(t), ax.get_ylim()[1] * 0.95, f" {t:g}", color="#b33")
    ax.set_xlabel("log10 firing rate (fraction of tokens)")
    ax.set_ylabel("features")
    ax.set_title(
        f"{title}\n{metrics.n_features} features, {metrics.n_dead} dead, "
        f"{metrics.n_always_on} always on, {metrics.n_tokens} tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(
    results: Mapping[str, SpliceMetrics], out: Path, extra: Mapping[str, Any]
) -> None:
    """``eval.json`` (all metrics + firing rates), ``eval.md`` and one histogram each."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": dict(extra),
        "results": {
            name: m.summary() | {"firing_rates": m.firing_rates} for name, m in results.items()
        },
    }
    (out / "eval.json").write_text(json.dumps(payload, indent=1))
    (out / "eval.md").write_text(metrics_table(results) + "\n")
    for name, m in results.items():
        plot_firing_rates(m, str(out / f"firing_rates_{name}.png"), title=name)
