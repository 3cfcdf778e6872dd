"""``bae-lens compare``: train (or load) a set of dictionaries at one hook, evaluate them
side by side, and write one table (markdown + JSON) and one plot of L0 against CE loss
recovered.

Dictionaries (names accepted by ``--dictionaries``):

- ``bae``: the main job's BAE (``BinaryAutoencoderTrainingConfig`` with
  ``bae-lens train``'s defaults, through :func:`bae_lens.train.train_sae`);
- ``random_bae``: the random-code control (:mod:`bae_lens.baselines`), firing rate
  matched to the BAE's mean bit rate when the BAE is in the set;
- ``standard``, ``topk``, ``batchtopk``, ``jumprelu``, ``gated``: SAELens's architectures;
- ``transcoder_relu``, ``transcoder_bae``: transcoders of the same block's MLP
  (``blocks.L.ln2.hook_normalized`` -> ``blocks.L.hook_mlp_out``), so their CE loss
  recovered is measured against zero-ablating that MLP's output, not the hook.

All of them train on one activation cache (:func:`bae_lens.baselines.cache_activations`),
at width ``expansion * d_in`` (d_in: the hook's width, d_mlp at ``mlp.hook_post``), with
the same tokens, batch size, learning rate and seed.
Metrics are those of :mod:`bae_lens.evaluate`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from sae_lens import SAE, LoggingConfig

from bae_lens.baselines import (
    NORMALIZE,
    RANDOM_CONTROL,
    SAELENS_BASELINES,
    baseline_config,
    cache_activations,
    cached_hooks,
)
from bae_lens.evaluate import evaluate_saes
from bae_lens.hidden_states import check_hooks
from bae_lens.main_job import MAIN_JOB_DEFAULTS
from bae_lens.runtime import environment
from bae_lens.splice_metrics import SpliceMetrics, metrics_table
from bae_lens.stages import StageClock
from bae_lens.transcoder_training import train_transcoder
from bae_lens.transcoders import TranscoderTrainingConfig

logger = logging.getLogger(__name__)

TRANSCODERS = {"transcoder_relu": "relu", "transcoder_bae": "binary"}
DICTIONARIES = ("bae", RANDOM_CONTROL, *SAELENS_BASELINES, *TRANSCODERS)
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class CompareSettings:
    """What every dictionary of one comparison shares."""

    hook: str
    expansion: int = 4
    training_tokens: int = 300_000
    batch_tokens: int = 1024
    context_size: int = 128
    lr: float = 1e-3
    seed: int = 42
    k: int = 32
    """topk/batchtopk k and jumprelu target L0."""
    l1_coefficient: float = 5.0
    """standard, gated and the ReLU transcoder."""
    random_firing_rate: float | None = None
    """random_bae's per-bit rate; None: the BAE's mean rate (0.05 without a BAE)."""
    device: str = "cpu"
    dtype: str = "float32"
    """Every dictionary's dtype (:data:`bae_lens.runtime.DTYPES`)."""
    model_name: str = "custom"
    n_batches_for_norm_estimate: int = 20
    """As :func:`bae_lens.train.train_sae` (the norm estimate reads these batches first)."""
    exclude_special_tokens: bool = True
    """Drop BOS and other special tokens from training (as `bae-lens train`)."""


def transcoder_hooks(hook: str) -> tuple[str, str]:
    """(MLP input, MLP output) hooks of the block that ``hook`` belongs to."""
    match = _LAYER_RE.match(hook)
    if match is None:
        raise ValueError(
            f"hook={hook!r} names no block (blocks.L....): transcoders need a block's MLP"
        )
    layer = match.group(1)
    return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"


def check_dictionaries(names: list[str]) -> None:
    unknown = [n for n in names if n not in DICTIONARIES]
    if unknown or not names:
        raise ValueError(f"dictionaries={names} : unknown {unknown}; allowed {list(DICTIONARIES)}")


def _cache_tokens(s: CompareSettings) -> int:
    """Tokens to cache so no dictionary wraps around: the training tokens, plus the BOS
    positions that training drops, plus 2%. (The norm estimate's batches are trained on
    afterwards, see bae_lens.train.OutlierFilter, so they need no tokens of their own.)"""
    return math.ceil(s.training_tokens * s.context_size / (s.context_size - 1) * 1.02)


def _bae_firing_rate(folder: Path) -> float | None:
    """The BAE's mean bit firing rate over its last logged training steps."""
    log = folder / "training_log.jsonl"
    cfg = folder / "cfg.json"
    if not (log.exists() and cfg.exists()):
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    info = json.loads(cfg.read_text())
    n_bits = info["d_sae"] * info.get("bits_per_feature", 1)
    l0s = [r["l0"] for r in records[-5:] if "l0" in r]
    return min(max(sum(l0s) / len(l0s) / n_bits, 1e-4), 0.5) if l0s else None


def train_dictionary(
    name: str,
    model: Any,
    train_set: Any,
    cache: Path,
    out: Path,
    s: CompareSettings,
    wandb: LoggingConfig | None = None,
) -> None:
    """Train dictionary ``name`` on the cached activations and save it to ``out``; with
    ``wandb``, as its own wandb run named ``<run name or "compare">-<name>``."""
    from bae_lens.models import hook_width
    from bae_lens.train import train_sae

    common: dict[str, Any] = {
        "model_name": s.model_name,
        "training_tokens": s.training_tokens,
        "train_batch_size_tokens": s.batch_tokens,
        "context_size": s.context_size,
        "lr": s.lr,
        "seed": s.seed,
        "exclude_special_tokens": s.exclude_special_tokens,
    }
    if wandb is not None:
        common["logger"] = replace(wandb, run_name=f"{wandb.run_name or 'compare'}-{name}")
    torch.manual_seed(s.seed)
    if name in TRANSCODERS:
        hook_in, hook_out = transcoder_hooks(s.hook)
        cfg = _transcoder_config(name, model.cfg.d_model, s)  # ln2 -> mlp_out: both d_model
        train_transcoder(
            model, cfg, hook_in, hook_out, out, cached_activations_path=cache, **common
        )
        return
    d_in = hook_width(model.cfg, s.hook)  # d_mlp at mlp.hook_post, d_model on the residual
    train_sae(
        model,
        train_set,
        _sae_config(name, d_in, s, out.parent / "bae"),
        s.hook,
        out,
        use_cached_activations=True,
        cached_activations_path=str(cache),
        n_batches_for_norm_estimate=s.n_batches_for_norm_estimate,
        device=s.device,
        dtype=s.dtype,
        **common,
    )


def _transcoder_config(name: str, d_in: int, s: CompareSettings) -> TranscoderTrainingConfig:
    return TranscoderTrainingConfig(
        d_in=d_in,
        d_sae=s.expansion * d_in,
        d_out=d_in,
        code=TRANSCODERS[name],  # type: ignore[arg-type]
        l1_coefficient=s.l1_coefficient,
        device=s.device,
        dtype=s.dtype,
    )  # its own coefficients: its losses use "mean" reductions, the BAE's "sum"/"per_bit"


def _sae_config(name: str, d_in: int, s: CompareSettings, bae_folder: Path) -> Any:
    """The BAE's config (the main job's coefficients) or a baseline's; the random control
    matches the firing rate of the BAE saved in ``bae_folder`` when there is one."""
    if name == "bae":
        from bae_lens.bae import BinaryAutoencoderTrainingConfig

        return BinaryAutoencoderTrainingConfig(
            d_in=d_in,
            d_sae=s.expansion * d_in,
            device=s.device,
            dtype=s.dtype,
            normalize_activations=NORMALIZE,
            **MAIN_JOB_DEFAULTS,
        )
    rate = s.random_firing_rate or _bae_firing_rate(bae_folder) or 0.05
    return baseline_config(
        name, d_in, s.expansion * d_in, k=s.k, l1_coefficient=s.l1_coefficient,
        device=s.device, firing_rate=rate, dtype=s.dtype,
    )  # fmt: skip


def run_compare(
    model: Any,
    train_set: Any,
    eval_tokens: Int[torch.Tensor, "n pos"],
    dictionaries: list[str],
    settings: CompareSettings,
    work_dir: str | Path,
    output_dir: str | Path,
    *,
    reuse: bool = False,
    keep_cache: bool = False,
    eval_batch_size: int = 8,
    wandb: LoggingConfig | None = None,
    extra_saes: Mapping[str, SAE[Any]] | None = None,
) -> dict[str, Any]:
    """Train (or, with ``reuse``, load) ``dictionaries`` under ``work_dir``, evaluate them on
    ``eval_tokens`` and write ``compare.md``, ``compare.json`` and ``l0_vs_ce.png`` to
    ``output_dir``. Returns the JSON payload. ``wandb``: each dictionary trained logs to
    its own wandb run (:func:`bae_lens.train.wandb_logging`). ``extra_saes`` (already
    trained, e.g. SAELens pretrained SAEs) are evaluated beside them, under their keys."""
    check_dictionaries(dictionaries)
    check_hooks(model, [settings.hook])
    work, out = Path(work_dir), Path(output_dir)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    hooks = [settings.hook]
    if any(n in TRANSCODERS for n in dictionaries):
        hooks += [h for h in transcoder_hooks(settings.hook) if h not in hooks]
    todo = [n for n in dictionaries if not (reuse and (work / n / "cfg.json").exists())]
    clock = StageClock()
    cache = work / "activations"
    if todo and not (reuse and cache.exists() and set(hooks) <= set(cached_hooks(cache))):
        shutil.rmtree(cache, ignore_errors=True)
        n_tokens = _cache_tokens(settings)
        with clock.stage("cache activations", n_tokens):
            cache_activations(
                model,
                train_set,
                hooks,
                cache,
                n_tokens=n_tokens,
                context_size=settings.context_size,
            )
    # the BAE first: the random control matches its firing rate
    for name in sorted(todo, key=lambda n: n != "bae"):
        shutil.rmtree(work / name, ignore_errors=True)
        logger.info("training %s", name)
        with clock.stage(f"train {name}", settings.training_tokens):
            train_dictionary(name, model, train_set, cache, work / name, settings, wandb)
    if todo and not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    saes = {
        n: SAE.load_from_disk(work / n, device=settings.device, dtype=settings.dtype)
        for n in dictionaries
    }
    saes |= dict(extra_saes or {})
    results = evaluate_saes(model, saes, eval_tokens, eval_batch_size, clock=clock)
    logger.info(clock.summary_line())
    payload = {
        "settings": asdict(settings),
        "environment": environment(),
        "eval_tokens": list(eval_tokens.shape),
        "stages": clock.as_dict(),
        "time_summary": clock.summary_line(),
        "results": {n: m.summary() | {"firing_rates": m.firing_rates} for n, m in results.items()},
    }
    (out / "compare.json").write_text(json.dumps(payload, indent=1))
    (out / "compare.md").write_text(metrics_table(results) + "\n")
    plot_l0_vs_ce(
        results, str(out / "l0_vs_ce.png"), title=f"{settings.model_name} {settings.hook}"
    )
    return payload


def plot_l0_vs_ce(results: Mapping[str, SpliceMetrics], path: str, title: str = "") -> None:
    """L0 (log scale) against CE loss recovered, one labelled point per dictionary; binary
    codes also show their burst L0 (hollow, joined to L0); transcoders are squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, m) in enumerate(results.items()):
        color = f"C{i % 10}"
        marker = "s" if m.input_hook_name != m.hook_name else "o"
        l0 = max(m.l0, 1e-2)
        ax.scatter([l0], [m.ce_loss_recovered], color=color, marker=marker, zorder=3, label=name)
        ax.annotate(
            name, (l0, m.ce_loss_recovered), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
        if "bae" in name or m.burst_l0 < 0.999 * m.l0:
            burst = max(m.burst_l0, 1e-2)
            ax.plot([l0, burst], [m.ce_loss_recovered] * 2, color=color, lw=0.8, ls=":")
            ax.scatter(
                [burst],
                [m.ce_loss_recovered],
                facecolors="none",
                edgecolors=color,
                marker=marker,
                zorder=3,
            )
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token; hollow: burst L0)")
    ax.set_ylabel("CE loss recovered")
    ax.set_title(f"{title}\nsquares: transcoders (vs. zero-ablating the MLP output)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
