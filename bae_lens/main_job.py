"""The main job: train a BAE at one hook, save it, evaluate it spliced in, plot its firing.

``bae-lens train`` parses its options into :class:`MainJobSettings` and calls
:func:`run_main_job`. The defaults are the embedded model (SmolLM2-135M-Instruct), its
residual stream after block 14 of 30, the embedded corpus and 300k training tokens.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import LoggingConfig

from bae_lens.bae import BinaryAutoencoderTrainingConfig
from bae_lens.runtime import resolve_dtype, set_threads
from bae_lens.splice_metrics import SpliceMetrics
from bae_lens.stages import StageClock

logger = logging.getLogger(__name__)

DEFAULT_HOOK = "blocks.14.hook_resid_post"  # the residual stream after 15 of 30 blocks

MAIN_JOB_DEFAULTS: dict[str, Any] = {
    "entropy_coefficient": 0.0,
    "l0_coefficient": 0.2,
    "covariance_coefficient": 30.0,
    "estimator_temperature": 0.3,
}
"""The main job's BAE objective: squared error + 0.2 per firing (ones per token) + 30 x
the per-bit dependence penalty, with the sigmoid straight-through estimator at temperature
0.3. The paper's price per bit of entropy is 0 by default:
in ablations on the frontier's cache (benchmarks/results/frontier/recipe.jsonl, README
"The BAE recipe") it is what makes features dense. At 500k training tokens the entropy
price 0.05 gave L0 183 with 680 of 2304 features over 10% of tokens; the price per firing
0.2 alone gave L0 117 with 49 over 10% and higher explained variance than the entropy
objective at that L0, and even 0.01 of entropy price beside it brought 228 back.
``--entropy-coefficient 0.05 --l0-coefficient 0`` trains the paper's objective.

The temperature: at temperature 1 (the estimator's own default) the surrogate is wide
enough to pass the price's gradient to bits far below their threshold, which die (price
0.5, 500k tokens: 863 of 2304 dead); at 0.3 only bits near their threshold are charged
(237 dead, higher explained variance at a higher L0). On the frontier's 2M-token points it lowers the spliced
KL at matched L0 (0.353 / 0.220 / 0.153 against 0.515 / 0.257 / 0.165 at L0 32 / 64 /
128) and the features over 10% of tokens (2 / 4 / 38 against 15 / 8 / 75)
(benchmarks/results/frontier; ``bae_temp1`` there is the recipe before)."""


@dataclass
class MainJobSettings:
    """Everything the main job needs; ``bae_options`` are BinaryAutoencoderTrainingConfig
    fields (estimator, coefficients, ...)."""

    model: str | None = None
    """Model name; None: the embedded SmolLM2."""
    hook: str = DEFAULT_HOOK
    dataset: str = "embedded"
    eval_dataset: str | None = None
    """Held-out text to evaluate on, taken whole (None: the dataset's eval split, or its
    held-out 5% of documents when no file holds one)."""
    eval_split: str = "auto"
    """A hub dataset's eval split (:func:`bae_lens.corpus.load_hub_dataset`)."""
    expansion: int = 4
    training_tokens: int = 300_000
    batch_tokens: int = 1024
    context_size: int = 128
    lr: float = 1e-3
    eval_sequences: int = 32
    output: str = "runs/bae"
    device: str = "cpu"
    dtype: str = "float32"
    """The SAE's, the activations' and the model's dtype (:data:`bae_lens.runtime.DTYPES`)."""
    threads: int | None = None
    autocast_lm: bool = False
    seed: int = 42
    frontier: str | None = "benchmarks/results/frontier/frontier.json"
    """A frontier report (``bae-lens frontier``'s JSON): the BAE's KL is set against its
    TopK curve at the same L0 (None, or a missing file: no comparison)."""
    bae_options: dict[str, Any] = field(default_factory=lambda: dict(MAIN_JOB_DEFAULTS))
    wandb: LoggingConfig | None = None
    """SAELens's logging config with wandb on (:func:`bae_lens.train.wandb_logging`);
    None: no wandb."""


def run_main_job(settings: MainJobSettings) -> dict[str, Any]:
    """Train, save (SAELens format), evaluate and plot; returns the metrics summary, which
    is also written to ``<output>/eval.json`` with the firing rates and the stage table."""
    from bae_lens import models
    from bae_lens.corpus import load_data

    s = settings
    set_threads(s.threads)
    torch.manual_seed(s.seed)
    started = time.time()
    clock = StageClock()
    BinaryAutoencoderTrainingConfig(d_in=1, d_sae=1, **s.bae_options)  # fail before loading
    model_name = s.model or models.EMBEDDED_MODEL_NAME
    with clock.stage("model load"):
        model = models.load_model(model_name, device=s.device, dtype=resolve_dtype(s.dtype))
    # Shuffle documents: the corpus is stored book by book, and a run that reads a prefix
    # of it should still see every book.
    with clock.stage("data load"):
        split, eval_tokens = s.eval_split, s.eval_sequences * s.context_size
        train_set = load_data(s.dataset, "train", eval_split=split, tokens=s.training_tokens)
        train_set = train_set.shuffle(seed=s.seed)
        if s.eval_dataset is not None:
            eval_set = load_data(s.eval_dataset, "all", tokens=eval_tokens).shuffle(seed=s.seed)
        else:
            eval_set = load_data(s.dataset, "eval", eval_split=split, tokens=eval_tokens)
            eval_set = eval_set.shuffle(seed=s.seed)
    covariance_penalty = _train(model, model_name, train_set, s, clock)
    trained = time.time()
    metrics = _evaluate(model, model_name, eval_set["text"], s, clock)
    total = time.time() - started
    summary = metrics.summary() | {
        "train_seconds": round(trained - started, 1),
        "total_seconds": round(total, 1),
        "model": model_name,
        "training_tokens": s.training_tokens,
        "covariance_penalty": covariance_penalty,
        "threads": torch.get_num_threads(),
        "device": s.device,
        "dtype": s.dtype,
        "autocast_lm": s.autocast_lm,
        "stages": clock.as_dict(),
        "time_summary": clock.summary_line(total),
    }
    if s.frontier is not None and Path(s.frontier).is_file():
        from bae_lens.frontier_report import place_against_frontier, placement_line

        placement = place_against_frontier(
            json.loads(Path(s.frontier).read_text()), model_name, s.hook,
            metrics.l0, metrics.kl_spliced,
        )  # fmt: skip
        summary["against_frontier"] = placement | {"frontier": s.frontier}
        logger.info(placement_line(placement))
    with open(Path(s.output) / "eval.json", "w") as f:
        json.dump(summary | {"firing_rates": metrics.firing_rates}, f)
    return summary


def _train(
    model: Any, model_name: str, train_set: Any, s: MainJobSettings, clock: StageClock
) -> str:
    """Train and save the BAE; returns its dependence penalty's name."""
    from bae_lens.models import hook_width
    from bae_lens.train import train_sae

    d_in = hook_width(model.cfg, s.hook)  # d_mlp at mlp.hook_post, d_model on the residual
    sae_cfg = BinaryAutoencoderTrainingConfig(
        d_in=d_in,
        d_sae=s.expansion * d_in,
        device=s.device,
        dtype=s.dtype,
        normalize_activations="expected_average_only_in",
        **s.bae_options,
    )
    train_sae(
        model, train_set, sae_cfg, s.hook, Path(s.output), model_name=model_name,
        training_tokens=s.training_tokens, train_batch_size_tokens=s.batch_tokens,
        context_size=s.context_size, lr=s.lr, device=s.device, dtype=s.dtype, seed=s.seed,
        clock=clock,
        autocast_lm=s.autocast_lm, **({"logger": s.wandb} if s.wandb is not None else {}),
    )  # fmt: skip
    return sae_cfg.covariance_penalty


def _evaluate(
    model: Any, model_name: str, texts: list[str], s: MainJobSettings, clock: StageClock
) -> SpliceMetrics:
    """Load the saved BAE back as a user would, splice it in on held-out text, plot."""
    from bae_lens.evaluate import build_eval_tokens, evaluate_sae
    from bae_lens.io import load_sae
    from bae_lens.splice_metrics import plot_firing_rates

    out = Path(s.output)
    inference = load_sae(out, device=s.device, dtype=s.dtype)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {model_name!r} has no tokenizer: cannot tokenize text")
    with clock.stage("eval: tokenisation"):
        tokens = build_eval_tokens(
            tokenizer, texts, s.context_size, s.eval_sequences, tokenizer.bos_token_id
        )
    batch_size = min(8, len(tokens))
    metrics = evaluate_sae(model, inference, tokens, s.hook, batch_size=batch_size, clock=clock)
    with clock.stage("plotting"):
        plot_firing_rates(metrics, str(out / "firing_rates.png"), title=f"BAE at {s.hook}")
    return metrics
