"""``bae-lens train``: the main job (:func:`bae_lens.main_job.run_main_job`)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from sae_lens import LoggingConfig

from bae_lens.bae import BAE_OPTIONS, BinaryAutoencoderTrainingConfig
from bae_lens.cli.preflight import add_overwrite_argument, add_runtime_arguments, check_train
from bae_lens.config_args import add_config_options, config_values
from bae_lens.main_job import DEFAULT_HOOK, MAIN_JOB_DEFAULTS, MainJobSettings, run_main_job
from bae_lens.train import WANDB_PROJECT, wandb_logging

EVAL_SPLIT_HELP = (
    "hub dataset split to evaluate on; 'auto': validation, else test, else every 20th "
    "document of train (held out, never trained on); the choice is logged. A local path "
    "names its eval split by file"
)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Model, hook, data and training-size arguments shared by train and compare."""
    p.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    p.add_argument("--hook", default=DEFAULT_HOOK, help="TransformerLens hook name")
    p.add_argument(
        "--dataset",
        default="embedded",
        help="'embedded', a local .txt/.json/.jsonl file or folder (5%% of its documents held "
        "out for evaluation unless it has train.* and eval.* files), or a hub dataset name",
    )
    p.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_in")
    p.add_argument("--training-tokens", type=int, default=300_000)
    p.add_argument("--batch-tokens", type=int, default=1024, help="tokens per minibatch")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-split", default="auto", help=EVAL_SPLIT_HELP)
    p.add_argument(
        "--wandb",
        action="store_true",
        help="log training to Weights & Biases through SAELens (losses, L0, explained "
        "variance and the BAE's code statistics as metrics/bae/...); the key comes from "
        "`wandb login` or WANDB_API_KEY; WANDB_MODE=offline keeps runs on disk",
    )
    p.add_argument("--wandb-project", default=WANDB_PROJECT, help="wandb project")
    p.add_argument("--wandb-entity", default=None, help="wandb entity (team or user)")
    p.add_argument("--wandb-run-name", default=None, help="wandb run name (default: wandb's)")


def wandb_from_args(args: argparse.Namespace) -> LoggingConfig | None:
    """SAELens's wandb logging config from ``--wandb*``, or None without ``--wandb``."""
    if not args.wandb:
        return None
    return wandb_logging(args.wandb_project, args.wandb_entity, args.wandb_run_name)


def check_run_arguments(args: argparse.Namespace) -> None:
    """Fail before any work, naming the option as the user typed it."""
    for option, low in (("expansion", 1), ("training_tokens", 1), ("batch_tokens", 2),
                        ("context_size", 2), ("eval_sequences", 1), ("threads", 1)):  # fmt: skip
        value = getattr(args, option, None)
        if value is not None and value < low:
            raise ValueError(f"--{option.replace('_', '-')} {value}: must be >= {low}")
    lr = getattr(args, "lr", None)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr {lr}: must be a finite number > 0")
    if getattr(args, "training_tokens", 0) < getattr(args, "batch_tokens", 0):
        raise ValueError(
            f"--training-tokens {args.training_tokens} is smaller than one minibatch "
            f"(--batch-tokens {args.batch_tokens})"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--eval-sequences", type=int, default=32, help="held-out sequences")
    p.add_argument(
        "--eval-dataset",
        default=None,
        help="local .txt/.jsonl file or folder to evaluate on, taken whole (default: the "
        "dataset's eval split; a local file or folder without one holds out 5%% of its "
        "documents, never trained on)",
    )
    p.add_argument("--output", default="runs/bae", help="output directory")
    add_overwrite_argument(p)
    add_runtime_arguments(p)
    p.add_argument(
        "--autocast-lm",
        action="store_true",
        help="run the model in bfloat16 autocast while generating training activations "
        "(SAELens's autocast_lm; about 1.9x faster on CPUs with AVX512-BF16 or AMX, slower "
        "on CPUs without; evaluation stays float32)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--frontier",
        default="benchmarks/results/frontier/frontier.json",
        help="frontier report whose TopK curve the BAE's KL is set against at the same L0 "
        "('none' or a missing file: no comparison)",
    )
    add_config_options(p, BinaryAutoencoderTrainingConfig, BAE_OPTIONS, MAIN_JOB_DEFAULTS)


def settings_from_args(args: argparse.Namespace) -> MainJobSettings:
    return MainJobSettings(
        model=args.model,
        hook=args.hook,
        dataset=args.dataset,
        eval_dataset=args.eval_dataset,
        eval_split=args.eval_split,
        expansion=args.expansion,
        training_tokens=args.training_tokens,
        batch_tokens=args.batch_tokens,
        context_size=args.context_size,
        lr=args.lr,
        eval_sequences=args.eval_sequences,
        output=args.output,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        autocast_lm=args.autocast_lm,
        seed=args.seed,
        frontier=None if args.frontier == "none" else args.frontier,
        bae_options=config_values(args, BAE_OPTIONS),
        wandb=wandb_from_args(args),
    )


def print_summary(summary: dict[str, Any], out: str) -> None:
    rows = [
        ("MSE (per element)", summary["mse"]),
        ("explained variance", summary["explained_variance"]),
        ("CE loss recovered", summary["ce_loss_recovered"]),
        (
            "CE clean / spliced / zero",
            "{ce_clean:.3f} / {ce_spliced:.3f} / {ce_zero_ablation:.3f}".format(**summary),
        ),
        ("KL spliced (nats)", summary["kl_spliced"]),
        ("L0 (ones per token)", summary["l0"]),
        ("burst L0", summary["burst_l0"]),
        ("entropy (bits)", summary["entropy_bits"]),
        ("dead features", f"{summary['n_dead']} / {summary['n_features']}"),
        ("always-on features", f"{summary['n_always_on']} / {summary['n_features']}"),
        ("dense >1% / >10% / >50%", " / ".join(str(v) for v in summary["n_dense"].values())),
        ("eval tokens (outliers left out)", f"{summary['n_tokens']} ({summary['n_outliers']})"),
        ("wall time (s)", summary["total_seconds"]),
    ]
    print(f"\nBAE at {summary['hook_name']} of {summary['model']}")
    for name, value in rows:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name:<28} {text}")
    if "against_frontier" in summary:
        from bae_lens.frontier_report import placement_line

        print(placement_line(summary["against_frontier"]))
    print(f"saved to {out} (SAELens format), firing-rate histogram: {out}/firing_rates.png")
    print(summary["time_summary"])


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    check_train(args)  # before the model loads
    summary = run_main_job(settings_from_args(args))
    print_summary(summary, args.output)
    return 0
