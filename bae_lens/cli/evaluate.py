"""``bae-lens eval``: saved dictionaries spliced into the model, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from bae_lens.cli.preflight import add_runtime_arguments, check_evaluate
from bae_lens.cli.train import EVAL_SPLIT_HELP
from bae_lens.evaluate import evaluate_folders
from bae_lens.runtime import set_threads
from bae_lens.splice_metrics import metrics_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bae-lens eval``."""
    p.add_argument("saes", nargs="+", help="SAELens save folders (cfg.json + safetensors)")
    p.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    p.add_argument("--hook", default=None, help="override the SAEs' recorded input hook")
    p.add_argument("--dataset", default="embedded", help="as for `bae-lens train` (eval split)")
    p.add_argument("--eval-split", default="auto", help=EVAL_SPLIT_HELP)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--eval-sequences", type=int, default=32, help="held-out sequences")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--output", default="runs/eval", help="folder for eval.json/.md and plots")
    add_runtime_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Load SAEs from disk, evaluate side by side, write and print."""
    check_evaluate(args)
    set_threads(args.threads)
    results = evaluate_folders(
        args.saes,
        Path(args.output),
        model_name=args.model,
        hook=args.hook,
        dataset=args.dataset,
        context_size=args.context_size,
        n_sequences=args.eval_sequences,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        eval_split=args.eval_split,
    )
    print(metrics_table(results))
    print(f"\nwritten to {args.output}/eval.json, eval.md, firing_rates_*.png")
    return 0
