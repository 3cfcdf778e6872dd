"""``bae-lens``: command-line entry points.

``bae-lens train`` is the main job: train a BAE on a middle residual-stream layer of the
embedded model (SmolLM2-135M-Instruct) on the embedded corpus, save it in SAELens's
format, evaluate it spliced into the model on held-out text and plot its firing rates.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("bae_lens")

DEFAULT_HOOK = "blocks.14.hook_resid_post"  # the residual stream after 15 of 30 blocks


def _set_threads(threads: int | None) -> None:
    # On small shared machines, two OpenMP threads were 40-100x slower than one whenever
    # another process was busy; default to one thread on machines with <= 2 cores.
    if threads is None:
        threads = 1 if (os.cpu_count() or 1) <= 2 else None
    if threads is not None:
        torch.set_num_threads(threads)


def _bae_field_help() -> dict[str, str]:
    """Docstrings under the BAE config fields (used for --help)."""
    import ast
    import inspect

    from bae_lens import bae

    tree = ast.parse(inspect.getsource(bae.BinaryAutoencoderTrainingConfig))
    helps: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
        ):
            value = nxt.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                # argparse treats % as a format character
                helps[node.target.id] = " ".join(value.value.split()).replace("%", "%%")
    return helps


_BAE_CLI_FIELDS = (
    "estimator",
    "estimator_temperature",
    "bits_per_feature",
    "entropy_coefficient",
    "entropy_warm_up_steps",
    "entropy_start_step",
    "entropy_threshold",
    "entropy_reduction",
    "covariance_coefficient",
    "covariance_warm_up_steps",
    "covariance_penalty",
    "covariance_reduction",
    "init_firing_rate",
)

# Defaults of the main job, chosen in short trials on cached activations of the embedded
# model (150 steps of 1024 tokens, README "Choosing the coefficients"): entropy 0.05 bits
# per token priced in squared-error units took L0 from ~700 to ~170 of 2304 at a few
# points of explained variance; covariance 30 (per bit) cut the mean per-bit dependence.
_MAIN_JOB_DEFAULTS: dict[str, Any] = {
    "entropy_coefficient": 0.05,
    "covariance_coefficient": 30.0,
}


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Model, hook, data and training-size arguments shared by train and compare."""
    p.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    p.add_argument("--hook", default=DEFAULT_HOOK, help="TransformerLens hook name")
    p.add_argument(
        "--dataset",
        default="embedded",
        help="'embedded', a local .txt/.json/.jsonl file or folder, or a hub dataset name",
    )
    p.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_in")
    p.add_argument("--training-tokens", type=int, default=300_000)
    p.add_argument("--batch-tokens", type=int, default=1024, help="tokens per minibatch")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from bae_lens.bae import BinaryAutoencoderTrainingConfig

    add_run_args(p)
    p.add_argument("--eval-sequences", type=int, default=32, help="held-out sequences")
    p.add_argument("--output", default="runs/bae", help="output directory")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 on machines with <= 2 cores, else torch's choice)",
    )
    p.add_argument(
        "--autocast-lm",
        action="store_true",
        help="run the model in bfloat16 autocast while generating training activations "
        "(SAELens's autocast_lm; about 1.9x faster on CPUs with AVX512-BF16 or AMX, slower "
        "on CPUs without; evaluation stays float32)",
    )
    p.add_argument("--seed", type=int, default=42)
    helps = _bae_field_help()
    defaults = {f.name: f.default for f in fields(BinaryAutoencoderTrainingConfig)}
    defaults.update(_MAIN_JOB_DEFAULTS)
    for name in _BAE_CLI_FIELDS:
        default = defaults[name]
        kind = type(default) if default is not None else float
        p.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=helps.get(name, "")
        )


def load_data(dataset: str, split: str) -> Any:
    """The embedded corpus (``dataset='embedded'``), a local text/JSON dataset or a hub one."""
    from bae_lens import corpus

    if dataset == "embedded":
        return corpus.load_embedded_corpus(split)
    return corpus.load_text_dataset(dataset, split=split)


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """The main job: train, save, evaluate, plot. Returns the metrics summary."""
    from bae_lens import BinaryAutoencoderTrainingConfig, models
    from bae_lens.evaluate import build_eval_tokens, evaluate_sae, plot_firing_rates
    from bae_lens.stages import StageClock
    from bae_lens.train import train_sae

    _set_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output)
    started = time.time()
    clock = StageClock()
    bae_options = {name: getattr(args, name) for name in _BAE_CLI_FIELDS}
    BinaryAutoencoderTrainingConfig(d_in=1, d_sae=1, **bae_options)  # fail before loading
    model_name = args.model or models.EMBEDDED_MODEL_NAME
    with clock.stage("model load"):
        model = models.load_model(model_name, device=args.device)
    # Shuffle documents: the corpus is stored book by book, and a run that reads a prefix
    # of it should still see every book.
    with clock.stage("data load"):
        train_set = load_data(args.dataset, "train").shuffle(seed=args.seed)
        eval_set = load_data(args.dataset, "eval").shuffle(seed=args.seed)
    d_in = model.cfg.d_model
    sae_cfg = BinaryAutoencoderTrainingConfig(
        d_in=d_in,
        d_sae=args.expansion * d_in,
        device=args.device,
        normalize_activations="expected_average_only_in",
        **bae_options,
    )
    train_sae(
        model,
        train_set,
        sae_cfg,
        args.hook,
        out,
        model_name=model_name,
        training_tokens=args.training_tokens,
        train_batch_size_tokens=args.batch_tokens,
        context_size=args.context_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        clock=clock,
        autocast_lm=args.autocast_lm,
    )
    trained = time.time()
    from sae_lens import SAE

    inference = SAE.load_from_disk(out, device=args.device)  # what a user loads back
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {model_name!r} has no tokenizer: cannot tokenize text")
    with clock.stage("eval: tokenisation"):
        tokens = build_eval_tokens(
            tokenizer,
            eval_set["text"],
            args.context_size,
            args.eval_sequences,
            tokenizer.bos_token_id,
        )
    batch_size = min(8, len(tokens))
    metrics = evaluate_sae(model, inference, tokens, args.hook, batch_size=batch_size, clock=clock)
    with clock.stage("plotting"):
        plot_firing_rates(metrics, str(out / "firing_rates.png"), title=f"BAE at {args.hook}")
    total = time.time() - started
    summary = metrics.summary() | {
        "train_seconds": round(trained - started, 1),
        "total_seconds": round(total, 1),
        "model": model_name,
        "training_tokens": args.training_tokens,
        "covariance_penalty": args.covariance_penalty,
        "threads": torch.get_num_threads(),
        "autocast_lm": args.autocast_lm,
        "stages": clock.as_dict(),
        "time_summary": clock.summary_line(total),
    }
    with open(out / "eval.json", "w") as f:
        json.dump(summary | {"firing_rates": metrics.firing_rates}, f)
    return summary


def _print_summary(summary: dict[str, Any], out: str) -> None:
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
    print(f"saved to {out} (SAELens format), firing-rate histogram: {out}/firing_rates.png")
    print(summary["time_summary"])


def _train_command(args: argparse.Namespace) -> int:
    summary = run_train(args)
    _print_summary(summary, args.output)
    return 0


# Each subcommand: (name, help, module, add-arguments function, run function). Modules are
# imported when their subcommand is parsed; a feature module adds its entry with one line.
SUBCOMMANDS: list[tuple[str, str, str, str, str]] = [
    ("train", "train + save + evaluate a BAE (the main job)", "bae_lens.cli",
     "_add_train_args", "_train_command"),
    ("eval", "evaluate saved SAELens dictionaries spliced into the model, side by side",
     "bae_lens.evaluate", "add_eval_args", "eval_command"),
    ("compare", "train the BAE and the baseline zoo on one activation cache; table + L0/CE plot",
     "bae_lens.compare", "add_compare_args", "compare_command"),
    ("comsem", "interpret and score features with any OpenAI-compatible judge (ComSem)",
     "bae_lens.comsem.cli", "add_comsem_args", "comsem_command"),
    ("import-legacy", "convert a model (and hidden states) written by the paper's released code",
     "bae_lens.legacy", "add_import_legacy_args", "import_legacy_command"),
    ("entropy", "entropy (bits) of the model's hidden states per layer/position, estimated with BAEs",
     "bae_lens.entropy", "add_entropy_args", "entropy_command"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bae-lens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, help_text, module_name, add_arguments, run in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        getattr(module, add_arguments)(sub.add_parser(name, help=help_text))
        commands[name] = getattr(module, run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "dataset", "embedded") == "embedded":
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(name, "1")
    try:
        return int(commands[args.command](args))
    except (ValueError, FileNotFoundError) as err:
        print(f"bae-lens: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
