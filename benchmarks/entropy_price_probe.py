"""Does a large entropy price lower a 2304-bit code's entropy? (issue 15, item 1)

The set: 30 independent bits with firing rates 0.05 ... 0.5 (23.4 bits of entropy) mapped
through random unit directions into d = 576, plus Gaussian noise 0.05 per coordinate,
20,000 rows. The BAE: 4 x 576 = 2304 bits, 625 steps of 512 rows at lr 5e-4 (the
authors' README settings), bae_lens.entropy.train_set_bae's defaults otherwise. Prints the
final estimate and the held-out trajectory (step, entropy bits, explained variance).

    python benchmarks/entropy_price_probe.py '{"entropy_coefficient": 60}' \
        '{"entropy_coefficient": 60, "covariance_coefficient": 0}'
"""

from __future__ import annotations

import json
import sys
import time

import torch

from bae_lens.entropy import estimate_entropy, train_set_bae
from bae_lens.penalties import binary_entropy_bits


def make_set(n: int = 20000, d: int = 576, seed: int = 0, noise: float = 0.05):
    gen = torch.Generator().manual_seed(seed)
    rates = torch.linspace(0.05, 0.5, 30)
    truth = float(binary_entropy_bits(rates.double()).sum())
    directions = torch.randn(30, d, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, 30, generator=gen) < rates).float()
    return codes @ directions + noise * torch.randn(n, d, generator=gen), truth


def main() -> None:
    torch.set_num_threads(1)
    x, truth = make_set()
    print("true entropy", round(truth, 2), flush=True)
    for spec in sys.argv[1:]:
        options = {"steps": 625, "batch_size": 512, "lr": 5e-4, "entropy_coefficient": 1.0,
                   "covariance_coefficient": 30.0, "early_stop": False} | json.loads(spec)  # fmt: skip
        started = time.time()
        sae = train_set_bae(x, 2304, **options)
        est = estimate_entropy(sae, x)
        trajectory = [(s, round(h), round(ev, 3)) for s, h, ev in sae.convergence.trajectory[::3]]
        print(json.dumps({"options": json.loads(spec), "estimate_bits": round(est.entropy_bits, 1),
                          "converged": sae.convergence.converged,
                          "collapsed": sae.convergence.collapsed, "trajectory": trajectory,
                          "seconds": round(time.time() - started)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
