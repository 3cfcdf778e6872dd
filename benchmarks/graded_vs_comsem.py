"""Do a BAE's top-activating examples by margin agree with ComSem's burst-score samples?

For each saved BAE: ComSem's collection (bae_lens.comsem.collect, burst score, top-k = 10
features per token, every assignment kept) and the top-N tokens per feature under the
graded views of BinaryAutoencoder ("burst": the margin away from the bit's majority state;
"margin": relu(z)), on the same held-out tokens of the embedded corpus. Per feature with
>= 6 ComSem samples: precision@N = the fraction of the top-N ranked tokens that ComSem
assigned to the feature, against its chance level (N tokens drawn at random among those
where the view is > 0); and, pooled, the fraction of ComSem's samples at which the view is
> 0. Prints a table and writes JSON with versions and the command.

    python benchmarks/graded_vs_comsem.py runs/compare/bae runs/bae_stages \\
        --out benchmarks/results/graded
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from bae_lens.comsem.collect import collect_many
from bae_lens.evaluate import load_eval_tokens
from bae_lens.feature_examples import comsem_agreement, mine_examples
from bae_lens.io import load_bae
from bae_lens.models import load_model_for_sae
from bae_lens.runtime import set_threads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("saes", nargs="+", help="saved BAE folders")
    p.add_argument("--sequences", type=int, default=160, help="held-out sequences")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--top-k", type=int, default=10, help="ComSem's features per token")
    p.add_argument("--n", default="5,10,20", help="top-N ranked examples compared")
    p.add_argument("--ignore-positions", default="",
                   help="token positions left out of both rankings, e.g. 1 (after BOS)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/graded")
    args = p.parse_args()
    set_threads(args.threads)
    ns = [int(x) for x in args.n.split(",")]
    ignore = tuple(int(x) for x in args.ignore_positions.split(",") if x.strip())
    saes = {str(f): load_bae(f) for f in args.saes}
    model = load_model_for_sae(args.saes[0])
    tokens = load_eval_tokens(model, "embedded", args.context_size, args.sequences)
    started = time.perf_counter()
    colls = collect_many(model, saes, tokens, k=args.top_k, max_samples=tokens.numel())
    seconds = {"comsem collection": time.perf_counter() - started}
    results: dict[str, dict[str, object]] = {}
    for name, sae in saes.items():
        d_sae = sae.cfg.d_sae
        results[name] = {"d_sae": d_sae, "hook": sae.cfg.metadata.hook_name}
        for view in ("burst", "margin"):
            started = time.perf_counter()
            ex = mine_examples(model, sae, tokens, view=view, n_top=max(ns),
                               track=list(range(d_sae)), ignore_positions=ignore)  # fmt: skip
            seconds[f"{name} {view}"] = time.perf_counter() - started
            assert ex.tracked_values is not None
            values = ex.tracked_values.permute(1, 2, 0)  # [n_seq, T, d_sae]
            results[name][view] = {
                str(n): comsem_agreement(
                    ex, colls[name], values, n=n, ignore_positions=ignore
                )._asdict()
                for n in ns
            }
            del ex, values
    print(f"{'dictionary':<24} {'view':<7} {'N':>3} {'features':>8} {'precision@N':>11} "
          f"{'chance':>7} {'above chance':>12} {'ComSem samples active':>21}")  # fmt: skip
    for name, res in results.items():
        for view in ("burst", "margin"):
            for n, a in res[view].items():  # type: ignore[union-attr]
                print(f"{name:<24} {view:<7} {n:>3} {a['n_features']:>8} {a['precision']:>11.3f} "
                      f"{a['chance']:>7.3f} {a['above_chance']:>12.3f} "
                      f"{a['samples_active']:>21.3f}")  # fmt: skip
    import sae_lens

    record = {
        "command": "python " + " ".join(sys.argv),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sae-lens": sae_lens.__version__,
            "machine": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "settings": {"sequences": args.sequences, "context_size": args.context_size,
                     "ignore_positions": list(ignore),
                     "top_k": args.top_k, "n_tokens": colls[next(iter(colls))].n_tokens},
        "results": results,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "graded_vs_comsem" + "".join(f"_ignore{p}" for p in ignore) + ".json"
    (out / name).write_text(json.dumps(record, indent=1))
    print(f"written to {out}/{name}")


if __name__ == "__main__":
    main()
