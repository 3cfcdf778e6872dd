"""Width, budget, noise, scale and dependence robustness of the set-entropy estimate
(issue 15, items 2-4).

Sets of known entropy (bae_lens.synthetic_sets), n = 20,000 rows in d = 576 (SmolLM2's
width), one factor changed at a time from a base:

- base: 24 independent bits firing at 0.05 ... 0.5 (18.66 bits), noise s.d. 0.02 per
  coordinate, scale 1;
- noise x10 (0.2); scale x10; dependent bits: a 24-bit Markov chain of fair bits flipped
  with probability 0.1 (joint 11.79 bits, marginals 24 bits).

For each set the entropy price is chosen from the data (bae_lens.entropy_price.auto_price:
the rate-distortion knee of a sweep of 256-bit BAEs), then the estimate is made at widths
256, 576, 1152 and 2304 (= 4 x d) with that price, training stopping at the held-out
plateau within a budget of --steps. Each row records the estimate (sum of marginals), the
pairwise tree bound on the joint entropy, the convergence flag and trajectory, and a
verdict: "ok" (within 10% of the truth), "flagged" (off by more, but the estimate says it
is not to be trusted: not converged, collapsed, or no clear knee), or "WRONG" (off by more
and not flagged). The truth compared with is the joint entropy, read off the tree bound
for the dependent set (a chain is a tree, so the bound is exact there) and off the sum of
marginals for the independent sets.

Resumable: each finished row is appended to --out/robustness.jsonl and skipped on rerun.

    OMP_NUM_THREADS=1 python benchmarks/entropy_robustness.py --out benchmarks/results/entropy
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

from bae_lens.entropy import estimate_set_entropy
from bae_lens.entropy_price import auto_price
from bae_lens.synthetic_sets import KnownSet, independent_bits_set, markov_chain_set

TOLERANCE = 0.10
SETS: dict[str, dict[str, Any]] = {
    "base": {"kind": "independent", "noise": 0.02, "scale": 1.0},
    "noise_x10": {"kind": "independent", "noise": 0.2, "scale": 1.0},
    "scale_x10": {"kind": "independent", "noise": 0.02, "scale": 10.0},
    "dependent": {"kind": "chain", "noise": 0.02, "scale": 1.0},
}


def make_set(spec: dict[str, Any], n: int, d: int, seed: int) -> KnownSet:
    if spec["kind"] == "independent":
        rates = torch.linspace(0.05, 0.5, 24).tolist()
        return independent_bits_set(n, d, rates, noise=spec["noise"], scale=spec["scale"],
                                    seed=seed)  # fmt: skip
    return markov_chain_set(n, d, 24, 0.1, noise=spec["noise"], scale=spec["scale"], seed=seed)


def verdict(estimate: float, truth: float, trusted: bool) -> str:
    if abs(estimate - truth) <= TOLERANCE * truth:
        return "ok"
    return "WRONG" if trusted else "flagged"


def environment() -> dict[str, str]:
    import sae_lens

    return {"torch": torch.__version__, "sae_lens": sae_lens.__version__,
            "python": platform.python_version(), "machine": platform.processor() or
            platform.machine(), "threads": str(torch.get_num_threads())}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/entropy")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--widths", default="256,576,1152,2304")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=576)
    p.add_argument("--steps", type=int, default=2000, help="budget per estimate")
    p.add_argument("--sweep-steps", type=int, default=1000, help="budget per sweep BAE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="print the table from the JSONL")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "robustness.jsonl"
    done = [json.loads(line) for line in rows_file.open()] if rows_file.exists() else []
    if args.report:
        print(table(done))
        return
    command = "python benchmarks/entropy_robustness.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "report"
    )
    for name in args.sets.split(","):
        spec = SETS[name]
        data = make_set(spec, args.n, args.d, args.seed)
        price_row = next((r for r in done if r["set"] == name and r["width"] == "price"), None)
        if price_row is None:
            started = time.time()
            choice = auto_price(data.x, d_sae=256, steps=args.sweep_steps, seed=args.seed)
            price_row = {"set": name, **spec, "width": "price", **choice.to_dict(),
                         "seconds": round(time.time() - started, 1), "command": command,
                         "environment": environment()}  # fmt: skip
            with rows_file.open("a") as f:
                f.write(json.dumps(price_row) + "\n")
            done.append(price_row)
        for width in [int(w) for w in args.widths.split(",")]:
            if any(r["set"] == name and r["width"] == width for r in done):
                continue
            started = time.time()
            est, _ = estimate_set_entropy(data.x, width, steps=args.steps, seed=args.seed,
                                          entropy_coefficient=price_row["price"])  # fmt: skip
            conv = est.convergence
            assert conv is not None
            estimate = est.tree_bound_bits if spec["kind"] == "chain" else est.entropy_bits
            assert estimate is not None
            trusted = conv.converged and not conv.collapsed and price_row["plateau"]
            row = {"set": name, **spec, "width": width, "price": price_row["price"],
                   "truth_joint_bits": round(data.joint_bits, 3),
                   "truth_marginal_bits": round(data.marginal_bits, 3),
                   "estimate_bits": round(estimate, 3),
                   "error": round(estimate / data.joint_bits - 1, 4),
                   "verdict": verdict(estimate, data.joint_bits, trusted),
                   **est.to_dict(with_rates=False),
                   "seconds": round(time.time() - started, 1)}  # fmt: skip
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
            logging.info("%s width %d: %.2f bits (truth %.2f), %s", name, width, estimate,
                         data.joint_bits, row["verdict"])  # fmt: skip
    print(table(done))


def _checks(criterion: str) -> str:
    """The patience of a row's plateau test, from its recorded criterion."""
    match = re.search(r"over the last (\d+) checks", criterion)
    return match.group(1) if match else "?"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| set | noise | scale | price (x V) | knee | width | estimate | sum of marginals "
             "| truth | error | converged (steps) | plateau test | verdict | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    prices = {r["set"]: r for r in rows if r["width"] == "price"}
    for r in rows:
        if r["width"] == "price":
            continue
        pr = prices[r["set"]]
        conv = r["convergence"]
        lines.append(
            f"| {r['set']} | {r['noise']} | {r['scale']} | {pr['relative_price']:.3g} | "
            f"{pr['knee_bits']:.1f} ({'ratio ' + format(pr['ratio'], '.0f')}) | {r['width']} | "
            f"{r['estimate_bits']:.2f} | {r['entropy_bits']:.2f} | {r['truth_joint_bits']:.2f} | "
            f"{r['error']:+.1%} | {'yes' if conv['converged'] else 'NO'} ({conv['steps']}) | "
            f"{_checks(conv['criterion'])} checks | {r['verdict']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
