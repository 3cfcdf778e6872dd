"""Splice-in evaluation of any SAELens dictionary at its hook (../shared/BAE_METHOD.md section 4).

A dictionary reads activations at its input hook (``cfg.metadata.hook_name``) and writes
its reconstruction at its output hook (``cfg.metadata.hook_name_out`` for a transcoder,
SAELens's own key; the input hook otherwise). On held-out token sequences ``[n, ctx]``,
each batch runs once clean, once per output hook with that hook zero-ablated, and once
per dictionary with the output hook's activation replaced by the reconstruction
("spliced"). Position 0 (BOS) is never replaced and never counted in activation metrics:
its residual is a norm outlier and SAELens training excludes special tokens. Likewise for
massive activations elsewhere (SmolLM2: the first token after BOS now and then, norm ~160x
the median): positions whose clean activation at the output hook has a norm above
``outlier_norm_factor`` (default 10) times the batch's median are left clean and not
counted (``n_outliers`` says how many), matching bae_lens.train's outlier filter. Several
dictionaries evaluated together (:func:`evaluate_saes`) share the clean and zero-ablated
passes.

Formulas. x: the dictionary's input at one token, y: the clean activation at its output
hook (y = x for an SAE), y^: its reconstruction, z: its code; sums run over the N
evaluated tokens (BOS excluded), CE and KL over every predicted position.

- CE = mean next-token cross-entropy (nats). CE loss recovered =
  (CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 for a perfect dictionary, 0 for one
  no better than zeros (SAELens's ``ce_loss_score``).
- KL_spliced = mean over positions of KL(P_clean || P_spliced) (nats); KL score =
  (KL_zero - KL_spliced) / KL_zero (SAELens's ``kl_div_score``).
- Explained variance = 1 - sum ||y - y^||^2 / sum ||y - mean(y)||^2, pooled over all
  tokens (computed by SAELens's ``ExplainedVarianceCalculator``).
- MSE = mean over tokens and dimensions of (y - y^)^2; ``mse_per_token`` = mean over
  tokens of ||y - y^||^2 (SAELens's training convention, = d_out * MSE).
- Firing indicator a_j = 1[z_j != 0]. For a BAE z is the raw bit vector (d_sae *
  bits_per_feature bits, from ``encode_bits``), so a_j is the bit itself.
- L0 = mean over tokens of sum_j a_j (ones per token for a binary code).
- Firing rate p_j = mean over tokens of a_j; dead: p_j = 0; always on: p_j = 1; dense at
  f: p_j > f, reported at f = 1%, 10% (SAEBench) and 50% (a bit "on by default").
- Burst L0 = sum_j min(p_j, 1 - p_j): the mean number of features away from their
  majority state (= L0 when no feature fires on more than half of the tokens).
- Entropy = sum_j Hb(p_j) bits, Hb(p) = -p log2 p - (1 - p) log2 (1 - p): the sum of
  marginal entropies, an upper bound on the code's joint entropy.

Example::

    tokens = build_eval_tokens(model.tokenizer, texts, 128, 32, model.tokenizer.bos_token_id)
    metrics = evaluate_sae(model, SAE.load_from_disk("runs/bae"), tokens)
    print(metrics_table({"bae": metrics}))
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.evals import ExplainedVarianceCalculator
from torch import Tensor
from tqdm.auto import tqdm

from bae_lens.hooks import sae_hook_name
from bae_lens.penalties import code_stats_from_rates
from bae_lens.stages import StageClock

logger = logging.getLogger(__name__)

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


def build_eval_tokens(
    tokenizer: Any, texts: list[str], context_size: int, max_sequences: int, bos_token_id: int
) -> Tensor:
    """Concatenate ``texts`` and cut into ``[n, context_size]`` rows, each starting with BOS."""
    if context_size < 2:
        raise ValueError(f"context_size={context_size} must be >= 2")
    if max_sequences < 1:
        raise ValueError(f"max_sequences={max_sequences} must be >= 1")
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


def dictionary_hooks(sae: SAE[Any], hook_name: str | None = None) -> tuple[str, str]:
    """(input hook, output hook) of ``sae``; ``hook_name`` overrides both for an SAE and
    the input hook of a transcoder (whose output hook is ``metadata.hook_name_out``)."""
    hook_in = sae_hook_name(sae, hook_name)
    hook_out = sae.cfg.metadata.get("hook_name_out") or hook_in
    return hook_in, hook_out


def _d_out(sae: SAE[Any]) -> int:
    return int(getattr(sae.cfg, "d_out", sae.cfg.d_in))


def _code(sae: SAE[Any], x: Tensor) -> Tensor:
    """The code whose firing statistics are reported: raw bits for a BAE."""
    encode_bits = getattr(sae, "encode_bits", None)
    return encode_bits(x) if callable(encode_bits) else sae.encode(x)


def _next_token_logprobs(logits: Tensor) -> Tensor:
    """``[batch, pos - 1, vocab]`` log-probabilities of the next token (one log-softmax,
    shared by the CE and the KL of a pass)."""
    return logits[:, :-1].float().log_softmax(-1)


def _ce_sum(logprobs: Tensor, tokens: Tensor) -> Tensor:
    """Summed next-token cross-entropy over all predicted positions."""
    return -logprobs.gather(-1, tokens[:, 1:, None]).sum()


def _kl_sum(clean_probs: Tensor, clean_logprobs: Tensor, logprobs: Tensor) -> Tensor:
    """sum over positions of KL(P_clean || P) (nats)."""
    return (clean_probs * (clean_logprobs - logprobs)).sum()


def _clean_positions(activation: Tensor, factor: float | None) -> Tensor:
    """``[batch, pos]`` mask of positions kept clean: BOS, and norms > factor x median."""
    norms = activation.flatten(2).norm(dim=-1)  # [batch, pos]
    mask = torch.zeros_like(norms, dtype=torch.bool)
    mask[:, 0] = True
    if factor is not None:
        mask |= norms > factor * norms[:, 1:].median()
    return mask


def _start_block(hook: str) -> int | None:
    """Index of the block holding ``hook`` (``blocks.14.hook_resid_post`` -> 14), or None."""
    match = re.match(r"blocks\.(\d+)\.", hook)
    return int(match.group(1)) if match else None


def _run_from(
    model: Any, tokens: Tensor, cache: Any, block: int | None, fwd_hooks: list[Any]
) -> Tensor:
    """Logits of ``model`` with ``fwd_hooks``, starting at ``block`` from the cached residual.

    Identical to a full forward with the same hooks when the hooks sit in or after
    ``block`` (the blocks before it see the clean input either way); ``block=None`` (a hook
    outside the blocks) runs the whole model.
    """
    if block is None or model.cfg.positional_embedding_type == "shortformer":
        return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    attention_mask = None
    tokenizer = model.tokenizer
    if tokenizer is not None and tokenizer.padding_side == "left":
        # the mask the full forward would compute from the tokens
        from transformer_lens.utils import get_attention_mask

        attention_mask = get_attention_mask(tokenizer, tokens, model.cfg.default_prepend_bos)
    residual = cache[f"blocks.{block}.hook_resid_pre"]  # [batch, pos, d_model]
    return model.run_with_hooks(
        residual,
        start_at_layer=block,
        tokens=tokens,
        attention_mask=attention_mask,
        fwd_hooks=fwd_hooks,
    )


def _replace_hook(replacement: Tensor, keep_clean: Tensor) -> Any:
    """Hook returning ``replacement`` except where ``keep_clean`` [batch, pos] is True."""

    def hook(activation: Tensor, hook: Any = None) -> Tensor:
        out = replacement.to(activation.dtype).clone()
        out[keep_clean] = activation[keep_clean]
        return out

    return hook


class _Accumulator:
    """Running sums for one dictionary."""

    def __init__(self) -> None:
        self.ev = ExplainedVarianceCalculator()
        self.ce = 0.0
        self.kl = 0.0
        self.sq = 0.0
        self.fire: Tensor | None = None
        self.n = 0
        self.n_outliers = 0

    def add_activations(self, target: Tensor, recon: Tensor, code: Tensor) -> None:
        """``target``, ``recon`` ``[n, d_out]``; ``code`` ``[n, n_features]``, BOS dropped."""
        self.ev.add_batch(sae_output=recon, hidden_acts=target)
        self.sq += float((target - recon).pow(2).sum())
        counts = (code != 0).sum(0).double().cpu()
        self.fire = counts if self.fire is None else self.fire + counts
        self.n += target.shape[0]


def _check_inputs(
    model: Any, hooks: Mapping[str, tuple[str, str]], tokens: Tensor, batch_size: int
) -> None:
    if not hooks:
        raise ValueError("saes is empty: pass at least one dictionary")
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[0] == 0:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)}: need [n >= 1, ctx >= 2]")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if tokens.shape[0] < batch_size:
        raise ValueError(
            f"evaluation set has {tokens.shape[0]} sequences, fewer than one batch "
            f"(batch_size={batch_size}): pass more held-out sequences or a smaller batch_size"
        )
    for name, pair in hooks.items():
        for hook in pair:
            if hook not in model.hook_dict:
                raise ValueError(f"{name}: hook_name={hook!r} is not a hook of the model")


def _check_dims(name: str, sae: SAE[Any], hooks: tuple[str, str], x: Tensor, y: Tensor) -> None:
    if x.shape[-1] != sae.cfg.d_in:
        raise ValueError(
            f"{name}: d_in={sae.cfg.d_in} does not match hook {hooks[0]!r}, whose "
            f"activations have shape {tuple(x.shape)} (last dimension {x.shape[-1]})"
        )
    if y.shape[-1] != _d_out(sae):
        raise ValueError(
            f"{name}: output dimension {_d_out(sae)} does not match hook {hooks[1]!r} "
            f"(last dimension {y.shape[-1]})"
        )


@torch.no_grad()
def evaluate_saes(
    model: Any,
    saes: Mapping[str, SAE[Any]],
    tokens: Tensor,
    batch_size: int = 8,
    hook_names: Mapping[str, str] | None = None,
    outlier_norm_factor: float | None = 10.0,
    clock: StageClock | None = None,
) -> dict[str, SpliceMetrics]:
    """Evaluate every dictionary in ``saes`` (name -> SAE) on ``tokens`` ``[n, ctx]``.

    ``hook_names`` optionally overrides a dictionary's recorded input hook. The clean and
    zero-ablated forward passes are shared. Only whole batches are evaluated (the last
    ``n % batch_size`` sequences are left out, so every batch has the same size). Raises ValueError for a hook the model lacks,
    a d_in that does not match the hook, or fewer than ``batch_size`` sequences.
    ``clock`` receives the wall time of the clean, zero-ablated and spliced passes.
    """
    overrides = hook_names or {}
    hooks = {name: dictionary_hooks(sae, overrides.get(name)) for name, sae in saes.items()}
    _check_inputs(model, hooks, tokens, batch_size)
    out_hooks = sorted({pair[1] for pair in hooks.values()})
    resid_pre = {
        f"blocks.{i}.hook_resid_pre" for i in map(_start_block, out_hooks) if i is not None
    }
    needed = sorted({h for pair in hooks.values() for h in pair} | resid_pre)
    acc = {name: _Accumulator() for name in saes}
    ce_clean = 0.0
    ce_zero = dict.fromkeys(out_hooks, 0.0)
    kl_zero = dict.fromkeys(out_hooks, 0.0)
    n_pred = 0
    for sae in saes.values():
        sae.eval()
    device = next(iter(saes.values())).device
    n_batches = tokens.shape[0] // batch_size  # whole batches only: every batch the same size
    clock = clock if clock is not None else StageClock()
    # Zero-ablated and spliced passes start at the block holding their hook, from the clean
    # pass's cached residual: the blocks before it would compute the same values again.
    starts = {hook: _start_block(hook) for hook in out_hooks}
    bar = tqdm(total=n_batches * tokens.shape[1] * batch_size, unit="tok", desc="evaluate")
    for b in range(n_batches):
        batch = tokens[b * batch_size : (b + 1) * batch_size].to(device)
        n_tok = batch.numel()
        with clock.stage("eval: clean pass", n_tok):
            clean, cache = model.run_with_cache(batch, names_filter=needed)
            clean_logprobs = _next_token_logprobs(clean)
            clean_probs = clean_logprobs.exp()
            ce_clean += float(_ce_sum(clean_logprobs, batch))
        n_pred += batch.shape[0] * (batch.shape[1] - 1)
        keep_clean = {h: _clean_positions(cache[h], outlier_norm_factor) for h in out_hooks}
        for hook in out_hooks:
            with clock.stage("eval: zero-ablated pass", n_tok):
                replace = _replace_hook(torch.zeros_like(cache[hook]), keep_clean[hook])
                zero = _run_from(model, batch, cache, starts[hook], [(hook, replace)])
                logprobs = _next_token_logprobs(zero)
                ce_zero[hook] += float(_ce_sum(logprobs, batch))
                kl_zero[hook] += float(_kl_sum(clean_probs, clean_logprobs, logprobs))
        for name, sae in saes.items():
            hook_in, hook_out = hooks[name]
            x, y = cache[hook_in], cache[hook_out]
            _check_dims(name, sae, hooks[name], x, y)
            with clock.stage("eval: spliced pass", n_tok):
                recon = sae.decode(sae.encode(x.to(sae.dtype)))  # [batch, pos, d_out]
                clean_at = keep_clean[hook_out]
                replace = _replace_hook(recon, clean_at)
                spliced = _run_from(model, batch, cache, starts[hook_out], [(hook_out, replace)])
                logprobs = _next_token_logprobs(spliced)
                acc[name].ce += float(_ce_sum(logprobs, batch))
                acc[name].kl += float(_kl_sum(clean_probs, clean_logprobs, logprobs))
            with clock.stage("eval: metrics"):
                counted = ~clean_at  # [batch, pos]: BOS and massive activations left out
                acc[name].n_outliers += int(clean_at[:, 1:].sum())
                acc[name].add_activations(
                    y[counted].float(),
                    recon[counted].float(),
                    _code(sae, x[counted].to(sae.dtype)),  # [n_counted, n_features]
                )
        bar.update(n_tok)
    bar.close()
    return {
        name: _finish(
            acc[name],
            hooks[name],
            _d_out(saes[name]),
            ce_clean / n_pred,
            ce_zero[hooks[name][1]] / n_pred,
            kl_zero[hooks[name][1]] / n_pred,
            n_pred,
        )
        for name in saes
    }


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else float("nan")


def code_statistics(rates: Tensor) -> dict[str, Any]:
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


def _finish(
    acc: _Accumulator,
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


def evaluate_sae(
    model: Any,
    sae: SAE[Any],
    tokens: Tensor,
    hook_name: str | None = None,
    batch_size: int = 8,
    outlier_norm_factor: float | None = 10.0,
    clock: StageClock | None = None,
) -> SpliceMetrics:
    """Splice ``sae`` into ``model`` at its hook on ``tokens`` ``[n, ctx]`` and measure."""
    overrides = {"sae": hook_name} if hook_name else None
    saes = {"sae": sae}
    results = evaluate_saes(model, saes, tokens, batch_size, overrides, outlier_norm_factor, clock)
    return results["sae"]


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


# ---- `bae-lens eval` -------------------------------------------------------------------


def load_eval_tokens(model: Any, dataset: str, context_size: int, n_sequences: int) -> Tensor:
    """Held-out tokens from ``dataset``'s eval split ("embedded" or a local path/hub name)."""
    from bae_lens.corpus import load_data

    data = load_data(dataset, "eval")
    tok = model.tokenizer
    return build_eval_tokens(tok, data["text"], context_size, n_sequences, tok.bos_token_id)


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


def evaluate_folders(
    folders: list[str],
    output: Path,
    *,
    model_name: str | None = None,
    hook: str | None = None,
    dataset: str = "embedded",
    context_size: int = 128,
    n_sequences: int = 32,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, SpliceMetrics]:
    """Load the SAELens save ``folders`` (named by folder), evaluate them side by side on
    ``dataset``'s held-out text and write eval.json, eval.md and histograms to ``output``."""
    from bae_lens import models
    from bae_lens.transcoders import register_transcoders

    register_transcoders()
    for path in folders:
        if not (Path(path) / "cfg.json").exists():
            raise ValueError(f"{path!r} is not a SAELens save folder (no cfg.json)")
    if len({Path(p).name for p in folders}) != len(folders):
        raise ValueError(f"SAE folders {folders} have repeated names")
    saes = {Path(p).name: SAE.load_from_disk(p, device=device) for p in folders}
    model = models.load_model(model_name or models.EMBEDDED_MODEL_NAME, device=device)
    tokens = load_eval_tokens(model, dataset, context_size, n_sequences)
    overrides = dict.fromkeys(saes, hook) if hook else None
    results = evaluate_saes(model, saes, tokens, batch_size, overrides)
    write_results(results, output, {"saes": folders, "n_sequences": len(tokens)})
    return results
