"""SAEBench's core eval on a saved BAE (or any saved SAELens SAE), the model passed as an object.

SAEBench's own entry point (``python -m sae_bench.evals.core.main``) loads the model with
``HookedTransformer.from_pretrained_no_processing(sae.cfg.model_name)``: TransformerLens
3.x does not list SmolLM2, and the hub may be out of reach. This script calls SAEBench's
``run_evals`` with the model object bae_lens builds from the SAE's metadata
(``bae_lens.models.load_model_for_sae``: the embedded SmolLM2 loads offline) or the
TransformerLens name given with ``--model`` (network), and an ActivationsStore over
``--dataset``: "embedded" (the embedded corpus's held-out split, offline) or a hub dataset
name (network). Writes SAEBench's metrics and per-feature densities with the versions and
the command to JSON.

What it needs: ``sae-bench`` importable. Its requirements pull torch 2.14, numpy 1.26 and
datasets 3.6, which would replace this project's pins; what was verified here is a
throwaway venv holding only ``sae-bench`` (``pip install --no-deps``) and its pure-Python
imports (tabulate, collectibles, seaborn, scikit-learn), layered on this venv with a
``.pth`` file (README, "SAEBench").

    python benchmarks/saebench_core.py runs/bae_stages --out benchmarks/results/saebench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

VIEWS = ("code", "margin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's options; checked here, before anything loads."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sae", help="saved SAE folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--model", default=None,
                   help="TransformerLens model name (default: the SAE's metadata; the embedded "
                        "SmolLM2 loads offline)")  # fmt: skip
    p.add_argument("--dataset", default="embedded",
                   help="'embedded' (held-out split, offline) or a hub dataset name (network)")  # fmt: skip
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--batch-size-prompts", type=int, default=4)
    p.add_argument("--reconstruction-batches", type=int, default=4,
                   help="batches for CE / KL with the SAE spliced in")  # fmt: skip
    p.add_argument("--sparsity-batches", type=int, default=4,
                   help="batches for L0, explained variance, feature densities")  # fmt: skip
    p.add_argument("--view", default="code", choices=VIEWS,
                   help="what the BAE's encode returns: the 0/1 code (SAEBench's L0 then counts "
                        "ones), or the margin relu(z) (same reconstruction)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/saebench")
    args = p.parse_args(argv)
    for name in ("context_size", "batch_size_prompts", "reconstruction_batches",
                 "sparsity_batches", "threads"):  # fmt: skip
        low = 2 if name == "context_size" else 1
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}")
    if not (Path(args.sae) / "cfg.json").is_file():
        p.error(f"{args.sae}: no cfg.json there; give a saved SAE folder")
    return args


def _dataset(name: str, context_size: int, n_prompts: int) -> Any:
    """The embedded held-out split as a datasets.Dataset, or the hub name unchanged."""
    if name != "embedded":
        return name
    from bae_lens.corpus import load_data

    return load_data("embedded", "eval", tokens=context_size * n_prompts * 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from sae_bench.evals.core.eval_config import CoreEvalConfig
        from sae_bench.evals.core.main import run_evals
        from sae_bench.sae_bench_utils.general_utils import load_and_format_sae
    except ImportError as err:
        print(f"saebench_core: sae-bench is not importable here ({err}); see the README, "
              "'SAEBench'", file=sys.stderr)  # fmt: skip
        return 2
    import sae_bench
    import sae_lens
    import torch
    from sae_lens import ActivationsStore

    from bae_lens.io import load_sae
    from bae_lens.models import load_model, load_model_for_sae

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sae = load_sae(args.sae, device=args.device)
    if args.view != "code":
        sae.set_activation_view(args.view)
    # SAEBench's own preparation of an SAE passed as an object (what its multiple_evals
    # does): copies SAELens 6's metadata fields (hook_name, model_name, ...) onto cfg.
    _, sae, _ = load_and_format_sae("bae_lens", sae, args.device)
    model = (
        load_model(args.model, device=args.device)
        if args.model
        else load_model_for_sae(args.sae, device=args.device)
    )
    n_prompts = args.batch_size_prompts * max(args.reconstruction_batches, args.sparsity_batches)
    store = ActivationsStore.from_sae(
        model, sae, dataset=_dataset(args.dataset, args.context_size, n_prompts),
        context_size=args.context_size, streaming=False,
        store_batch_size_prompts=args.batch_size_prompts, device=args.device,
    )  # fmt: skip
    config = CoreEvalConfig(
        model_name=sae.cfg.metadata.model_name or "",
        batch_size_prompts=args.batch_size_prompts,
        n_eval_reconstruction_batches=args.reconstruction_batches,
        n_eval_sparsity_variance_batches=args.sparsity_batches,
        dataset=args.dataset,
        context_size=args.context_size,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        compute_featurewise_weight_based_metrics=True,
    )
    tok = model.tokenizer
    ignore = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    metrics, features = run_evals(sae, store, model, config, ignore_tokens=ignore)
    eval_seconds = time.perf_counter() - started
    density = torch.as_tensor(features.get("feature_density", []), dtype=torch.float64)
    record = {
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "sae": args.sae,
        "view": args.view,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sae-lens": sae_lens.__version__,
            "sae-bench": getattr(sae_bench, "__version__", None) or _version("sae-bench"),
            "machine": platform.platform(),
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        },
        "config": dataclasses.asdict(config),
        "metrics": metrics,
        "feature_metrics": sorted(features),
        "feature_density": {
            "n_features": int(density.numel()),
            "dead (density 0)": int((density == 0).sum()),
            "dense (> 0.1)": int((density > 0.1).sum()),
        },
        "seconds": {"load": round(load_seconds, 1), "eval": round(eval_seconds, 1)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"core_{Path(args.sae).name}_{args.view}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    for group, values in metrics.items():
        for key, value in values.items():
            print(f"{group:<32} {key:<34} {value}")
    print(f"written to {path}")
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
