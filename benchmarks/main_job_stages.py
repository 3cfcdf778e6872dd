"""Stage-by-stage time table of the main job (`bae-lens train`), each stage against its floor.

Runs the main job with the given options (default: exactly `bae-lens train`'s defaults), then
measures this machine's fp32 GEMM rate on the thread count the job used, and prices each
stage's matrix-multiply FLOPs at that rate: the floor is the time the stage would take if it
were nothing but GEMMs at that rate. Stages with no GEMMs (loading, tokenisation, plotting)
have no floor. Writes a JSON file and prints a markdown table.

    python benchmarks/main_job_stages.py --out benchmarks/results/main_job/stages.json
    python benchmarks/main_job_stages.py --out /tmp/s.json -- --training-tokens 40960

Arguments after ``--`` go to ``bae-lens train`` (``--output`` defaults to runs/bae_stages).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bae_lens.runtime import cpu_name

FORWARD_STAGES = ("norm estimate", "activation generation")


def gemm_gflops(threads: int, repeats: int = 7) -> dict[str, float]:
    """Median fp32 GEMM rate (GFLOP/s) at the model's MLP shape and at an SAE's shape."""
    torch.set_num_threads(threads)
    rates = {}
    for label, (n, k, m) in {
        "mlp 1024x576x1536": (1024, 576, 1536),
        "sae 1024x576x2304": (1024, 576, 2304),
    }.items():
        a, b = torch.randn(n, k), torch.randn(k, m)
        for _ in range(3):
            a @ b  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(10):
                a @ b
            times.append((time.perf_counter() - started) / 10)
        rates[label] = 2 * n * k * m / statistics.median(times) / 1e9
    return rates


def block_flops_per_token(cfg: Any, context: int) -> float:
    """Matrix-multiply FLOPs of one transformer block per token (causal attention at the
    mean key length context/2)."""
    d, dh = cfg.d_model, cfg.d_head
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    qkv = d * (cfg.n_heads * dh + 2 * n_kv * dh)
    out = cfg.n_heads * dh * d
    n_mlp = 3 if cfg.gated_mlp else 2
    mlp = n_mlp * d * cfg.d_mlp
    attention = 2 * cfg.n_heads * dh * (context / 2)  # scores and mixing
    return 2.0 * (qkv + out + mlp + attention)


def sae_step_flops_per_token(summary: dict[str, Any], d_in: int, batch: int) -> float:
    """Forward + backward of encoder and decoder (3 x 2 GEMMs of d_in x n_bits), plus the
    exact Frobenius dependence penalty's n x n Gram matrix (forward and backward)."""
    n_bits = summary["n_features"]
    flops = 3 * 2 * (2 * d_in * n_bits)
    if summary.get("covariance_penalty") == "frobenius":
        flops += 3 * 2 * batch * n_bits
    return float(flops)


def flops_per_token(summary: dict[str, Any], cfg: Any, args: Any) -> dict[str, float]:
    """Matrix-multiply FLOPs per token of each stage that has any."""
    hook_block = int(summary["hook_name"].split(".")[1])
    block = block_flops_per_token(cfg, args.context_size)
    unembed = 2.0 * cfg.d_model * cfg.d_vocab
    n_bits = summary["n_features"]
    sae_forward = 2 * 2 * cfg.d_model * n_bits
    return {
        "norm estimate": block * (hook_block + 1),
        "activation generation": block * (hook_block + 1),
        "SAE steps": sae_step_flops_per_token(summary, cfg.d_model, args.batch_tokens),
        "eval: clean pass": block * cfg.n_layers + unembed,
        "eval: zero-ablated pass": block * (cfg.n_layers - hook_block) + unembed,
        "eval: spliced pass": block * (cfg.n_layers - hook_block) + unembed + sae_forward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]
    if "--output" not in train_args:
        train_args += ["--output", "runs/bae_stages"]

    from bae_lens import models
    from bae_lens.cli import train as train_cli
    from bae_lens.main_job import run_main_job

    train_parser = argparse.ArgumentParser()
    train_cli.add_arguments(train_parser)
    job = train_parser.parse_args(train_args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    started = time.time()
    summary = run_main_job(train_cli.settings_from_args(job))
    wall = time.time() - started
    threads = summary["threads"]
    rates = gemm_gflops(threads)
    rate = statistics.median(rates.values())
    cfg = models.load_model(job.model or models.EMBEDDED_MODEL_NAME).cfg
    per_token = flops_per_token(summary, cfg, job)

    rows = {}
    for name, stage in summary["stages"].items():
        row = dict(stage)
        if name in per_token and stage["tokens"]:
            flops = per_token[name] * stage["tokens"]
            row["gflop"] = round(flops / 1e9, 1)
            row["floor_seconds"] = round(flops / (rate * 1e9), 2)
            row["of_floor"] = round(row["floor_seconds"] / stage["seconds"], 3)
        rows[name] = row
    result = {
        "command": "python benchmarks/main_job_stages.py " + " ".join(sys.argv[1:]),
        "train_args": train_args,
        "wall_seconds": round(wall, 1),
        "gemm_gflops": {k: round(v, 1) for k, v in rates.items()},
        "gemm_gflops_used_for_floors": round(rate, 1),
        "threads": threads,
        "stages": rows,
        "metrics": {
            k: summary[k]
            for k in (
                "mse",
                "explained_variance",
                "ce_loss_recovered",
                "kl_spliced",
                "l0",
                "entropy_bits",
                "n_dead",
                "n_dense",
            )  # fmt: skip
        },
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| stage | seconds | tokens | tokens/s | GEMM floor (s) | floor / actual |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["stages"].items():
        rate = row.get("tokens_per_second")
        lines.append(
            f"| {name} | {row['seconds']:.1f} | {row['tokens'] or ''} | "
            f"{'' if rate is None else f'{rate:,.0f}'} | {row.get('floor_seconds', 'n/a')} | "
            f"{row.get('of_floor', '')} |"
        )
    lines.append(
        f"\nwall {result['wall_seconds']} s on {result['threads']} thread(s); fp32 GEMM "
        f"{result['gemm_gflops_used_for_floors']} GFLOP/s ({result['machine']['cpu']})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
