"""Does "frobenius_probe" keep what the dependence penalty is for? A small synthetic check.

Data (the paper's synthetic set, ../shared/BAE_METHOD.md section 3): x = c A + noise with
c in {0, 1}^r independent fair bits and A r random directions in R^d_in. A BAE wider than
r can spread one latent bit over several correlated features; the dependence penalty
pushes against that. Each BAE trains with SAELens's training step (training_forward_pass,
backward, clip, Adam) under one covariance penalty, then is scored on held-out data:

- reconstruction: explained variance and MSE (SAELens convention: sum over d_in);
- dependence of the code: mean |C_ij| and root-mean C_ij^2 over off-diagonal pairs of the
  population covariance, mean |corr_ij| over pairs of non-constant bits, and the number
  of pairs with |corr| > 0.5;
- the code: total entropy (bits), L0, dead and always-on bits.

Reductions are pinned to "mean" (bits per code bit; per off-diagonal pair).
"frobenius" and "frobenius_probe" use the same coefficient: the probe estimate is an
unbiased estimate of the same objective, so they should land together.

    .venv/bin/python benchmarks/quality_check_penalties.py \
        --out benchmarks/results/quality_check_penalties.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput

import bae_lens  # noqa: F401  (registers "bae")
from bae_lens.bae import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.penalties import code_stats_from_rates, firing_rates

# (label, covariance_penalty, covariance_coefficient)
RUNS = (
    ("none", "frobenius", 0.0),
    ("abs", "abs_binary", 100.0),
    ("frobenius", "frobenius", 1000.0),
    ("frobenius_probe", "frobenius_probe", 1000.0),
)


def synthetic(n: int, r: int, d_in: int, noise: float, seed: int) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(r, d_in, generator=gen) / d_in**0.5  # [r, d_in]

    def sample(count: int, sample_seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed)
        bits = (torch.rand(count, r, generator=g) < 0.5).float()
        return bits @ directions * 3.0 + noise * torch.randn(count, d_in, generator=g)

    return sample, directions


def train(label: str, penalty: str, coefficient: float, args: argparse.Namespace, seed: int):
    torch.manual_seed(seed)
    sample, _ = synthetic(0, args.r, args.d_in, args.noise, args.data_seed)
    cfg = BinaryAutoencoderTrainingConfig(
        d_in=args.d_in,
        d_sae=args.d_sae,
        entropy_coefficient=args.entropy_coefficient,
        entropy_reduction="mean",  # pinned: coefficients below are for these reductions
        covariance_coefficient=coefficient,
        covariance_penalty=penalty,
        covariance_reduction="mean",
    )
    sae = BinaryAutoencoderTraining(cfg)
    coefficients = {
        name: value.value if isinstance(value, TrainCoefficientConfig) else value
        for name, value in sae.get_coefficients().items()
    }
    optimizer = torch.optim.Adam(sae.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(args.steps):
        x = sample(args.batch, 10_000 * seed + step)
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients=coefficients,
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    train_s = time.perf_counter() - start
    return sae, sample, train_s


@torch.no_grad()
def score(sae: BinaryAutoencoderTraining, sample: Any, n_eval: int) -> dict[str, float]:
    x = sample(n_eval, 999_999)
    bits = sae.encode_bits(x)  # [n_eval, d_sae]
    recon = sae.decode(bits)
    mse = (recon - x).pow(2).sum(dim=-1).mean()
    explained = 1 - (recon - x).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum()
    cov = torch.cov(bits.T.double(), correction=0)
    off = ~torch.eye(cov.shape[0], dtype=torch.bool)
    std = cov.diagonal().sqrt()
    live = std > 0
    corr = cov[live][:, live] / (std[live][:, None] * std[live][None, :])
    off_live = ~torch.eye(corr.shape[0], dtype=torch.bool)
    stats = code_stats_from_rates(firing_rates(bits))
    return {
        "explained_variance": float(explained),
        "mse": float(mse),
        "mean_abs_cov": float(cov[off].abs().mean()),
        "rms_cov": float(cov[off].pow(2).mean().sqrt()),
        "mean_abs_corr_live": float(corr[off_live].abs().mean()) if corr.shape[0] > 1 else 0.0,
        "pairs_abs_corr_gt_0.5": int((corr[off_live].abs() > 0.5).sum()) // 2,
        "entropy_bits": stats.entropy_bits,
        "l0": stats.l0,
        "frac_dead": stats.frac_never_on,
        "frac_always_on": stats.frac_always_on,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-in", type=int, default=64)
    parser.add_argument("--d-sae", type=int, default=128)
    parser.add_argument("--r", type=int, default=16, help="latent independent fair bits")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--entropy-coefficient", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--n-eval", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    wall = time.perf_counter()
    rows = []
    keys = ("explained_variance", "mean_abs_cov", "rms_cov", "mean_abs_corr_live")
    print(f"{'penalty':16} {'coef':>6} {'seed':>4} " + " ".join(f"{k:>18}" for k in keys))
    for label, penalty, coefficient in RUNS:
        for seed in args.seeds:
            sae, sample, train_s = train(label, penalty, coefficient, args, seed)
            row = {"label": label, "covariance_penalty": penalty, "coefficient": coefficient}
            row.update(seed=seed, train_s=train_s, **score(sae, sample, args.n_eval))
            rows.append(row)
            print(
                f"{label:16} {coefficient:>6g} {seed:>4} "
                + " ".join(f"{row[k]:>18.4g}" for k in keys),
                flush=True,
            )
    summary = {}
    for label, _, _ in RUNS:
        mine = [row for row in rows if row["label"] == label]
        summary[label] = {
            key: statistics.mean(row[key] for row in mine)
            for key in mine[0]
            if isinstance(mine[0][key], (int, float)) and key not in ("seed", "coefficient")
        }
    result = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "wall_s": time.perf_counter() - wall,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": [{"label": a, "covariance_penalty": b, "coefficient": c} for a, b, c in RUNS],
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
        },
        "summary_mean_over_seeds": summary,
        "results": rows,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
