"""BAE recipe ablations on the frontier's activation cache (issue 12, item 2).

Each run trains one dictionary exactly as ``bae-lens frontier`` does (SAELens's trainer on
the float16 cache of the embedded model's ``blocks.14.hook_resid_post``, outlier rows
dropped) but for fewer tokens, then measures it on held-out activations of the embedded
corpus's eval split (no splicing: explained variance, MSE, L0, burst L0, dense and dead
counts). One JSON line per run goes to ``--results`` with the command, the options, the
training time and the machine; a run already in the file is not repeated, so a killed
batch resumes. Splice-in KL of the chosen recipe comes from the frontier sweep itself.

    python benchmarks/bae_recipe.py --runs topk_k64 bae_default bae_batch4096
    python benchmarks/bae_recipe.py --list
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bae_lens.activation_cache import ActivationCache, CacheKey, build_cache, open_cache
from bae_lens.baselines import NORMALIZE, baseline_config
from bae_lens.frontier import FrontierSettings, cache_folder, train_config
from bae_lens.main_job import DEFAULT_HOOK
from bae_lens.runtime import environment, set_threads
from bae_lens.splice_metrics import code_statistics

TRAIN_KEY = CacheKey("smollm2-135m-instruct", DEFAULT_HOOK, "embedded", "train", 128, 1_590_548, 0)
EVAL_KEY = replace(TRAIN_KEY, split="eval", n_rows=32_768)

BASE = {"entropy_coefficient": 0.05, "covariance_coefficient": 30.0}
"""Every BAE run's starting point: the paper's objective as the main job shipped it before
these ablations (MAIN_JOB_DEFAULTS then); each run lists what it changes. Runs recorded
before the default dependence penalty became "frobenius_probe" used "frobenius" (their
rows say so); later rows carry their whole effective config."""


# name -> (architecture, setting overrides, BAE option overrides). Settings: FrontierSettings
# fields (batch_tokens, lr, training_tokens); BAE options: BinaryAutoencoderTrainingConfig.
def _per_firing(price: float, **extra: Any) -> dict[str, Any]:
    """Options of a BAE priced per firing only (no entropy price), plus ``extra``."""
    return {"entropy_coefficient": 0.0, "l0_coefficient": price, **extra}


RUNS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "topk_k32": ("topk", {"k": 32}, {}),
    "topk_k64": ("topk", {"k": 64}, {}),
    "topk_k128": ("topk", {"k": 128}, {}),
    # random-code control at the firing rate of the named run (its held-out L0 / n_bits)
    "random_match_default": ("random_bae", {"match": "bae_default"}, {}),
    "bae_default": ("bae", {}, {}),
    "bae_price0.1": ("bae", {}, {"entropy_coefficient": 0.1}),
    "bae_price0.2": ("bae", {}, {"entropy_coefficient": 0.2}),
    "bae_price0.5": ("bae", {}, {"entropy_coefficient": 0.5}),
    "bae_nocov": ("bae", {}, {"covariance_coefficient": 0.0}),
    "bae_batch4096": ("bae", {"batch_tokens": 4096}, {}),
    "bae_batch4096_lr4e-3": ("bae", {"batch_tokens": 4096, "lr": 4e-3}, {}),
    "bae_identity": ("bae", {}, {"estimator": "identity"}),
    "bae_temp0.3": ("bae", {}, {"estimator_temperature": 0.3}),
    "bae_lr3e-4": ("bae", {"lr": 3e-4}, {}),
    "bae_lr3e-3": ("bae", {"lr": 3e-3}, {}),
    "bae_init0.01": ("bae", {}, {"init_firing_rate": 0.01}),
    "bae_probe": ("bae", {}, {"covariance_penalty": "frobenius_probe"}),
    "bae_l0_0.05": ("bae", {}, {"l0_coefficient": 0.05}),
    "bae_l0_0.2": ("bae", {}, {"l0_coefficient": 0.2}),
    **{f"bae_l0only_{price:g}": ("bae", {}, _per_firing(price)) for price in (0.2, 0.5, 0.1)},
    "bae_l0_0.2_ent0.01": ("bae", {}, {"entropy_coefficient": 0.01, "l0_coefficient": 0.2}),
    "bae_l0only_0.2_nocov": ("bae", {}, _per_firing(0.2, covariance_coefficient=0.0)),
    "random_match_l0only_0.2": ("random_bae", {"match": "bae_l0only_0.2"}, {}),
    "bae_l0only_0.2_probe": ("bae", {}, _per_firing(0.2, covariance_penalty="frobenius_probe")),
    # dead bits at high price: ramp the price in over the first quarter of the steps
    # (500k tokens / 1024 per step = 488 steps)
    "bae_l0only_0.5_l0warmup": ("bae", {}, _per_firing(0.5, l0_warm_up_steps=122)),
    # dead bits at high price: the surrogate's width decides which bits the price reaches
    **{
        f"bae_l0only_{price:g}_temp{t:g}": ("bae", {}, _per_firing(price, estimator_temperature=t))
        for price, t in ((0.5, 3.0), (0.5, 0.3), (0.2, 0.3), (0.5, 0.1), (0.5, 0.03))
    },
    "bae_l0only_0.5_temp0.1_seed43": (
        "bae",
        {"seed": 43},
        _per_firing(0.5, estimator_temperature=0.1),
    ),
    "bae_l0only_0.2_seed43": ("bae", {"seed": 43}, _per_firing(0.2)),
}


def held_out_cache(cache_root: Path | None) -> ActivationCache:
    """Activations of the eval split at the hook (built once, with the model)."""
    path = cache_folder(EVAL_KEY, cache_root)
    try:
        return open_cache(path, EVAL_KEY)
    except FileNotFoundError:
        pass
    from bae_lens.activation_cache import sequences_needed
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import build_eval_tokens
    from bae_lens.models import load_model

    model = load_model()
    tok = model.tokenizer
    n_seq = sequences_needed(EVAL_KEY.n_rows, EVAL_KEY.context_size)
    texts = load_data("embedded", "eval").shuffle(seed=0)["text"]
    tokens = build_eval_tokens(tok, texts, EVAL_KEY.context_size, n_seq, tok.bos_token_id)
    return build_cache(model, tokens, EVAL_KEY, path)


@torch.no_grad()
def measure(folder: Path, x: torch.Tensor) -> dict[str, Any]:
    """Held-out reconstruction and code statistics of the saved dictionary in ``folder``."""
    from sae_lens import SAE

    sae = SAE.load_from_disk(folder, device="cpu")
    code = sae.encode(x)
    recon = sae.decode(code)
    err = (x - recon).pow(2).sum()
    ev = 1 - err / (x - x.mean(0)).pow(2).sum()
    rates = (code != 0).double().mean(0)
    stats = code_statistics(rates)
    burst_rates = torch.minimum(rates, 1 - rates)  # a bit flipped to its minority state
    stats["n_dense_after_flip"] = code_statistics(burst_rates)["n_dense"]
    return {"explained_variance": float(ev), "mse_per_token": float(err / len(x))} | stats


def run_one(name: str, cache: ActivationCache, x: torch.Tensor, args: argparse.Namespace) -> dict:
    arch, setting_overrides, options = RUNS[name]
    settings = FrontierSettings(hook=DEFAULT_HOOK, model_name=TRAIN_KEY.model,
                                training_tokens=args.training_tokens)  # fmt: skip
    setting_overrides = dict(setting_overrides)
    k = setting_overrides.pop("k", None) if arch != "bae" else None
    match = setting_overrides.pop("match", None)
    seed = int(setting_overrides.pop("seed", args.seed))
    settings = replace(settings, **setting_overrides)
    d_in = cache.d_in
    if arch == "bae":
        from bae_lens.bae import BinaryAutoencoderTrainingConfig

        options = dict(BASE) | options
        cfg = BinaryAutoencoderTrainingConfig(d_in=d_in, d_sae=4 * d_in,
                                              normalize_activations=NORMALIZE, **options)  # fmt: skip
    elif arch == "random_bae":
        rows = [r for r in read_rows(Path(args.results)) if r["name"] == match]
        if not rows:
            raise SystemExit(f"{name}: run {match} first (its firing rate is matched)")
        options = {"firing_rate": rows[-1]["l0"] / rows[-1]["n_features"], "matches": match}
        cfg = baseline_config(arch, d_in, 4 * d_in, firing_rate=options["firing_rate"])
    else:
        cfg = baseline_config(arch, d_in, 4 * d_in, k=int(k or 32))
    effective = {k: getattr(cfg, k) for k in ("entropy_coefficient", "covariance_coefficient",
                 "covariance_penalty", "l0_coefficient", "estimator", "estimator_temperature",
                 "init_firing_rate", "flip_majority_bits") if hasattr(cfg, k)}  # fmt: skip
    out = Path(args.work_dir) / name
    started = time.time()
    if not (out / "cfg.json").is_file():
        train_config(cfg, cache, settings, out, seed)
    seconds = time.time() - started
    return {
        "name": name,
        "architecture": arch,
        "k": k,
        "options": options,
        "effective_config": effective,
        "settings": asdict(settings),
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "held_out_rows": len(x),
        **measure(out, x),
    }


def read_rows(results: Path) -> list[dict[str, Any]]:
    if not results.is_file():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def report(rows: list[dict[str, Any]]) -> str:
    """Markdown table of every run, in file order."""
    out = ["| run | changed | tokens | EV | L0 | >1% | >10% | >50% | >10% after flip | dead | "
           "train s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        changed = ", ".join(f"{k}={v}" for k, v in r["options"].items()
                            if k not in BASE or BASE[k] != v)  # fmt: skip
        if r.get("k"):
            changed = f"k={r['k']}"
        for key in ("batch_tokens", "lr"):
            if r["settings"][key] != getattr(FrontierSettings, key):
                changed += f" {key}={r['settings'][key]}"
        d, f = r["n_dense"], r["n_dense_after_flip"]
        out.append(
            f"| {r['name']} | {changed.strip() or '(defaults)'} | "
            f"{r['settings']['training_tokens']:,} | {r['explained_variance']:.3f} | "
            f"{r['l0']:.1f} | {d['0.01']} | {d['0.1']} | {d['0.5']} | {f['0.1']} | "
            f"{r['n_dead']} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="*", default=list(RUNS))
    p.add_argument("--list", action="store_true")
    p.add_argument("--report", action="store_true", help="print the results as markdown")
    p.add_argument("--training-tokens", type=int, default=500_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", default="runs/recipe")
    p.add_argument("--cache-root", default=None)
    p.add_argument("--results", default="benchmarks/results/frontier/recipe.jsonl")
    args = p.parse_args()
    if args.list:
        for name, spec in RUNS.items():
            print(name, json.dumps(spec))
        return
    if args.report:
        print(report(read_rows(Path(args.results))))
        return
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        sys.exit(f"unknown runs {unknown}; --list shows them")
    set_threads(args.threads)
    root = Path(args.cache_root) if args.cache_root else None
    cache = open_cache(cache_folder(TRAIN_KEY, root), TRAIN_KEY)
    held = held_out_cache(root)
    x = held.take(torch.arange(held.n_rows).numpy())
    norms = x.norm(dim=-1)
    x = x[norms <= 10 * norms.median()]  # massive activations, as training and eval drop them
    results = Path(args.results)
    done = {(r["name"], r["seed"], r["settings"]["training_tokens"]) for r in read_rows(results)}
    env = environment()
    command = "python " + shlex.join(sys.argv)
    for name in args.runs:
        if (name, int(RUNS[name][1].get("seed", args.seed)), args.training_tokens) in done:
            continue
        row = run_one(name, cache, x, args) | {"command": command, "cpu": env.get("cpu"),
                                                "torch": env.get("torch")}  # fmt: skip
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("name", "explained_variance", "l0", "n_dense",
                                              "n_dense_after_flip", "n_dead", "train_seconds")}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
