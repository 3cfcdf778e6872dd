"""Synthetic check of the BAE entropy estimate (arXiv 2509.20997 section 3.1).

Sets of known entropy: codes of r independent fair bits mapped into R^d through r random
unit directions plus Gaussian noise (bae_lens.entropy.synthetic_binary_set). A BAE is
trained on each set (bae_lens.entropy.train_set_bae) and its estimate sum_j Hb(p_j) is
compared with r:

- main sweep: r = 1 .. 64, several seeds, with and without the entropy loss;
- one-factor sweeps at r = 16 (r = 32 for the width): noise, number of samples, the
  entropy price, and the BAE width d_sae (r close to the number of features).

The BAE trains on raw rows (normalize=False), so entropy_coefficient is a price per bit in
the set's own squared-distance units: a true bit (a fair bit along a unit direction) is
worth 0.25 of squared error per row, and coding Gaussian noise of variance s^2 per
direction pays at most 2 ln 2 s^2 per bit (its rate-distortion slope at zero rate), 0.0035
at s = 0.05. Any price between the two should keep exactly the r true bits. Covariance
penalty off (--covariance to change). Each run also records the plug-in entropy of whole
codes (at most log2 n), the squared error, and how many of the r true bits some code bit
reproduces (|correlation| >= 0.95). Writes synthetic.png and synthetic.json.

    python benchmarks/entropy_synthetic.py --out benchmarks/results/entropy
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bae_lens.entropy import (
    estimate_entropy,
    joint_code_entropy,
    synthetic_binary_set,
    train_set_bae,
)

SWEEPS = ("noise", "n", "entropy_coefficient", "d_sae")


@torch.no_grad()
def recovered_bits(sae: torch.nn.Module, x: torch.Tensor, codes: torch.Tensor) -> int:
    """True bits that some code bit reproduces: max_j |corr(h_j, c_i)| >= 0.95."""
    h = sae.encode_bits(x).double()  # type: ignore[operator]
    c = codes.double()
    h, c = h - h.mean(0), c - c.mean(0)
    denominator = c.norm(dim=0)[:, None] * h.norm(dim=0)[None, :]
    corr = (c.T @ h) / denominator.clamp_min(1e-12)  # [r, n_bits]
    return int((corr.abs().max(dim=1).values >= 0.95).sum())


def one(args: argparse.Namespace, **over: float) -> dict:
    """Train and measure one BAE; ``over`` overrides r, seed, noise, n, entropy_coefficient,
    d_sae."""
    run = {"r": args.sweep_r, "seed": 0, "noise": args.noise, "n": args.n,
           "entropy_coefficient": args.entropy, "d_sae": args.d_sae, **over}  # fmt: skip
    r, n, d_sae = int(run["r"]), int(run["n"]), int(run["d_sae"])
    data = synthetic_binary_set(n, args.d, r, noise=run["noise"], seed=int(run["seed"]))
    started = time.time()
    sae = train_set_bae(
        data.x,
        d_sae,
        steps=args.steps,
        batch_size=min(args.batch, n),
        lr=args.lr,
        entropy_coefficient=run["entropy_coefficient"],
        covariance_coefficient=args.covariance,
        normalize=False,
        outlier_factor=None,
        entropy_start_step=args.entropy_start,
        entropy_warm_up_steps=args.entropy_start,
        seed=int(run["seed"]),
    )
    est = estimate_entropy(sae, data.x)
    with torch.no_grad():
        sq_error = float(((sae(data.x) - data.x) ** 2).sum(-1).mean())
    return {**run, **est.to_dict(with_rates=False),
            "joint_code_entropy_bits": round(joint_code_entropy(sae, data.x), 3),
            "recovered_true_bits": recovered_bits(sae, data.x, data.codes),
            "squared_error_per_row": round(sq_error, 4),
            "noise_floor_per_row": round(args.d * run["noise"] ** 2, 4),
            "seconds": round(time.time() - started, 1)}  # fmt: skip


def plot(rows: list[dict], sweep: list[dict], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    axes = grid.ravel()
    axes[-1].axis("off")
    ax = axes[0]
    rs = sorted({row["r"] for row in rows})
    for lam, color in zip(sorted({row["entropy_coefficient"] for row in rows}),
                          ("tab:orange", "tab:blue", "tab:green"), strict=False):  # fmt: skip
        sel = [row for row in rows if row["entropy_coefficient"] == lam]
        ax.scatter([row["r"] for row in sel], [row["entropy_bits"] for row in sel], s=14,
                   color=color, label=f"estimate, entropy_coefficient={lam:g}")  # fmt: skip
        means = [sum(x["entropy_bits"] for x in sel if x["r"] == v)
                 / max(1, sum(x["r"] == v for x in sel)) for v in rs]  # fmt: skip
        ax.plot(rs, means, color=color)
    ax.plot(rs, rs, "k--", label="true entropy r")
    ax.axhline(args.d_sae, color="grey", lw=0.8, label=f"d_sae = {args.d_sae}")
    ax.set(xscale="log", yscale="log", xlabel="true entropy r (bits)", ylabel="estimate (bits)",
           title=f"d={args.d}, n={args.n}, noise={args.noise}, {args.seeds} seeds")  # fmt: skip
    ax.set_xticks(rs, [str(v) for v in rs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=7)
    for ax, key in zip(axes[1:5], SWEEPS, strict=True):
        sel = [s for s in sweep if s["vary"] == key]
        xs = [s[key] for s in sel]
        ax.plot(xs, [s["entropy_bits"] for s in sel], "o-", label="estimate")
        ax.plot(xs, [s["recovered_true_bits"] for s in sel], "s:", label="true bits recovered")
        true_r = sel[0]["r"] if sel else args.sweep_r
        ax.axhline(true_r, color="k", ls="--", label=f"true r = {true_r}")
        if key == "d_sae":
            ax.plot(xs, xs, color="grey", lw=0.8, label="d_sae (ceiling)")
        if key in ("n", "entropy_coefficient", "d_sae"):
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if key == "noise":
            ax.set_yscale("symlog", linthresh=20)
        ax.set(xlabel=key, ylabel="bits", title=f"vary {key} (r = {true_r}, others as in panel 1)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def summary(rows: list[dict], sweep: list[dict]) -> str:
    """Markdown tables: mean (s.d.) of the estimate over seeds per r and price; the sweeps."""
    lams = sorted({row["entropy_coefficient"] for row in rows})
    lines = ["| r | " + " | ".join(f"estimate, price {lam:g} | recovered" for lam in lams) + " |",
             "|---|" + "---|---|" * len(lams)]  # fmt: skip
    for r in sorted({row["r"] for row in rows}):
        cells = []
        for lam in lams:
            sel = [x for x in rows if x["r"] == r and x["entropy_coefficient"] == lam]
            h = torch.tensor([x["entropy_bits"] for x in sel], dtype=torch.float64)
            sd = f" ({float(h.std()):.2f})" if len(sel) > 1 else ""
            rec = "/".join(str(x["recovered_true_bits"]) for x in sel)
            cells.append(f"{float(h.mean()):.2f}{sd} | {rec}")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    for key in SWEEPS:
        sel = [s for s in sweep if s["vary"] == key]
        if sel:
            lines += ["", f"| {key} (r = {sel[0]['r']}) | " + " | ".join(str(s[key]) for s in sel) + " |",
                      "|---|" + "---|" * len(sel),
                      "| estimate | " + " | ".join(f"{s['entropy_bits']:.2f}" for s in sel) + " |",
                      "| recovered | " + " | ".join(str(s["recovered_true_bits"]) for s in sel) + " |"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--d", type=int, default=128, help="dimension of the hidden states")
    p.add_argument("--d-sae", type=int, default=256)
    p.add_argument("--rs", default="1,2,4,8,16,32,64")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=8192, help="samples per set")
    p.add_argument("--noise", type=float, default=0.05, help="noise s.d. per coordinate")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--entropy", type=float, default=0.03, help="entropy price per bit")
    p.add_argument("--entropy-start", type=int, default=100, help="start = warm-up steps")
    p.add_argument("--covariance", type=float, default=0.0)
    p.add_argument("--sweep-r", type=int, default=16)
    p.add_argument("--sweep-noise", default="0,0.05,0.1,0.2,0.4")
    p.add_argument("--sweep-n", default="128,512,2048,8192")
    p.add_argument("--sweep-entropy", default="0.001,0.003,0.01,0.03,0.1,0.3,1")
    p.add_argument("--sweep-d-sae", default="16,32,48,64,256", help="at r = 2 x sweep-r")
    p.add_argument("--out", default="benchmarks/results/entropy")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the PNG and reprint the tables from the JSON")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.replot:
        record = json.loads((out / "synthetic.json").read_text())
        plot(record["rows"], record["sweep"], args, out / "synthetic.png")
        print(summary(record["rows"], record["sweep"]))
        return
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = []
    for r in [int(v) for v in args.rs.split(",")]:
        for seed in range(args.seeds):
            for lam in (0.0, args.entropy):
                rows.append(one(args, r=r, seed=seed, entropy_coefficient=lam))
                row = rows[-1]
                print(f"r={r:3d} seed={seed} lambda_e={lam:<5} estimate {row['entropy_bits']:7.2f}"
                      f" informative {row['n_informative']:3d} recovered {row['recovered_true_bits']}"
                      f" sq.err {row['squared_error_per_row']} {row['seconds']} s", flush=True)  # fmt: skip
    values = {
        "noise": [float(v) for v in args.sweep_noise.split(",")],
        "n": [int(v) for v in args.sweep_n.split(",")],
        "entropy_coefficient": [float(v) for v in args.sweep_entropy.split(",")],
        "d_sae": [int(v) for v in args.sweep_d_sae.split(",")],
    }
    sweep = []
    for key in SWEEPS:
        for value in values[key]:
            extra = {"r": 2 * args.sweep_r} if key == "d_sae" else {}
            sweep.append({"vary": key, **one(args, **{key: value, **extra})})
            s = sweep[-1]
            print(f"sweep {key}={value} (r={s['r']}): estimate {s['entropy_bits']:.2f}"
                  f" recovered {s['recovered_true_bits']}", flush=True)  # fmt: skip
    plot(rows, sweep, args, out / "synthetic.png")
    print(summary(rows, sweep))
    record = {
        "command": "python benchmarks/entropy_synthetic.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "replot"),
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
