"""Synthetic check of the BAE entropy estimate (arXiv 2509.20997 section 3.1).

Sets of known entropy: codes of r independent fair bits mapped into R^d through r random
unit directions plus Gaussian noise (bae_lens.entropy.synthetic_binary_set). For each r
and seed, a BAE is trained on the set with and without the entropy loss (covariance
penalty on in both) and the estimate sum_j Hb(p_j) is compared with r. A second sweep
varies the noise and the number of samples at one r. Writes a PNG and a JSON.

    python benchmarks/entropy_synthetic.py --out benchmarks/results/entropy
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from bae_lens.entropy import estimate_set_entropy, joint_code_entropy, synthetic_binary_set


def one(args: argparse.Namespace, r: int, seed: int, lam: float, noise: float, n: int) -> dict:
    data = synthetic_binary_set(n, args.d, r, noise=noise, seed=seed)
    started = time.time()
    est, sae = estimate_set_entropy(
        data.x,
        args.d_sae,
        steps=args.steps,
        batch_size=min(args.batch, n),
        entropy_coefficient=lam,
        covariance_coefficient=args.covariance,
        entropy_start_step=args.entropy_start,
        entropy_warm_up_steps=args.entropy_start,
        seed=seed,
    )
    # Plug-in entropy of whole codes: bounded by log2(n), meaningful for r << log2(n).
    joint = joint_code_entropy(sae, data.x)
    return {"r": r, "seed": seed, "entropy_coefficient": lam, "noise": noise, "n": n,
            **est.to_dict(with_rates=False), "joint_code_entropy_bits": round(joint, 3),
            "seconds": round(time.time() - started, 1)}  # fmt: skip


def plot(rows: list[dict], sweep: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = ("tab:orange", "tab:blue", "tab:green", "tab:red")
    for lam, color in zip(args.lambdas, colors, strict=False):
        sel = [r for r in rows if r["entropy_coefficient"] == lam]
        if not sel:
            continue
        ax.scatter([r["r"] for r in sel], [r["entropy_bits"] for r in sel], color=color, s=14,
                   label=f"estimate, entropy_coefficient={lam}")  # fmt: skip
        rs = sorted({r["r"] for r in sel})
        means = [sum(x["entropy_bits"] for x in sel if x["r"] == v) / args.seeds for v in rs]
        ax.plot(rs, means, color=color)
        joint = [
            sum(x["joint_code_entropy_bits"] for x in sel if x["r"] == v) / args.seeds for v in rs
        ]
        ax.plot(rs, joint, color=color, ls=":", label=f"plug-in joint code entropy, {lam}")
    rs = sorted({r["r"] for r in rows})
    ax.plot(rs, rs, "k--", label="true entropy r")
    ax.axhline(math.log2(args.n), color="grey", lw=0.8, label="log2(n): plug-in ceiling")
    ax.set(xscale="log", yscale="log", xlabel="true entropy r (bits)", ylabel="estimate (bits)",
           title=f"d={args.d}, d_sae={args.d_sae}, n={args.n}, noise={args.noise}")  # fmt: skip
    ax.set_xticks(rs, [str(v) for v in rs], minor=False)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=7)
    for key, marker in (("noise", "o"), ("n", "s")):
        sel = [s for s in sweep if s["vary"] == key]
        ax2.plot(range(len(sel)), [s["entropy_bits"] for s in sel], marker=marker,
                 label=f"vary {key}: " + ", ".join(str(s[key]) for s in sel))  # fmt: skip
    ax2.axhline(args.sweep_r, color="k", ls="--", label=f"true r={args.sweep_r}")
    ax2.set(xlabel="sweep index", ylabel="estimate (bits)",
            title=f"r={args.sweep_r}, entropy_coefficient={args.sweep_entropy}")  # fmt: skip
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--d-sae", type=int, default=256)
    p.add_argument("--rs", default="2,4,8,16,32,64")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=8192, help="samples per set")
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--entropy", default="0,0.05,0.5", help="entropy_coefficients compared")
    p.add_argument("--sweep-entropy", type=float, default=0.5, help="entropy_coefficient of sweeps")
    p.add_argument("--entropy-start", type=int, default=100, help="entropy_start_step = warm-up")
    p.add_argument("--covariance", type=float, default=30.0)
    p.add_argument("--sweep-r", type=int, default=16)
    p.add_argument("--sweep-noise", default="0.05,0.25,0.5,1.0")
    p.add_argument("--sweep-n", default="256,1024,8192")
    p.add_argument("--out", default="benchmarks/results/entropy")
    p.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON")
    args = p.parse_args()
    args.lambdas = [float(v) for v in args.entropy.split(",")]
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.replot:  # redraw the PNG from the JSON of an earlier run with the same arguments
        record = json.loads((out / "synthetic.json").read_text())
        plot(record["rows"], record["sweep"], args, out / "synthetic.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    one(args, 2, 0, 0.0, args.noise, 1024)  # warm-up (not recorded)
    rows = []
    for r in [int(v) for v in args.rs.split(",")]:
        for seed in range(args.seeds):
            for lam in args.lambdas:
                rows.append(one(args, r, seed, lam, args.noise, args.n))
                row = rows[-1]
                print(f"r={r:3d} seed={seed} lambda_e={lam:<5} estimate {row['entropy_bits']:7.2f}"
                      f" bits  informative {row['n_informative']:3d}/{row['n_bits']}"
                      f"  joint {row['joint_code_entropy_bits']:5.2f}  {row['seconds']} s", flush=True)  # fmt: skip
    sweep = []
    for noise in [float(v) for v in args.sweep_noise.split(",")]:
        sweep.append(
            {"vary": "noise", **one(args, args.sweep_r, 0, args.sweep_entropy, noise, args.n)}
        )
    for n in [int(v) for v in args.sweep_n.split(",")]:
        sweep.append({"vary": "n", **one(args, args.sweep_r, 0, args.sweep_entropy, args.noise, n)})
    for s in sweep:
        print(f"sweep r={args.sweep_r} noise={s['noise']} n={s['n']}: {s['entropy_bits']:.2f} bits"
              f" informative {s['n_informative']}")  # fmt: skip
    plot(rows, sweep, args, out / "synthetic.png")
    record = {
        "command": "python benchmarks/entropy_synthetic.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("lambdas", "replot")),
        "rows": rows,
        "sweep": sweep,
        "wall_seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "device": f"cpu ({platform.processor() or platform.machine()}), 1 thread",
    }  # fmt: skip
    (out / "synthetic.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out}/synthetic.png and synthetic.json in {record['wall_seconds']} s")


if __name__ == "__main__":
    main()
