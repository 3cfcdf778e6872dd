"""``bae-lens compare``: the BAE and the baseline zoo on one activation cache
(:func:`bae_lens.compare.run_compare`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bae_lens.cli.preflight import add_overwrite_argument, add_runtime_arguments, check_compare
from bae_lens.cli.train import add_run_arguments, check_run_arguments, wandb_from_args
from bae_lens.compare import DICTIONARIES, CompareSettings, check_dictionaries, run_compare
from bae_lens.runtime import resolve_dtype, set_threads


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument(
        "--dictionaries",
        default=",".join(DICTIONARIES),
        help=f"comma-separated subset of {','.join(DICTIONARIES)}",
    )
    p.add_argument("--k", type=int, default=32, help="topk/batchtopk k, jumprelu target L0")
    p.add_argument(
        "--l1-coefficient", type=float, default=5.0, help="standard, gated, ReLU transcoder"
    )
    p.add_argument(
        "--random-firing-rate",
        type=float,
        default=None,
        help="random_bae bit rate (default: the BAE's mean rate)",
    )
    p.add_argument("--eval-sequences", type=int, default=32, help="held-out sequences")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument(
        "--extra-saes",
        default="",
        help="comma-separated saved SAE folders or SAELens pretrained SAEs (release/sae_id) "
        "evaluated beside the trained dictionaries",
    )
    p.add_argument("--work-dir", default="runs/compare", help="trained dictionaries + cache")
    p.add_argument("--output", default="benchmarks/results/compare", help="table, JSON, plot")
    p.add_argument("--reuse", action="store_true", help="load dictionaries already in --work-dir")
    add_overwrite_argument(p)
    p.add_argument("--keep-cache", action="store_true", help="keep the activation cache")
    add_runtime_arguments(p)
    p.add_argument("--seed", type=int, default=42)


def load_extra_saes(text: str, device: str, dtype: str = "float32") -> dict[str, Any]:
    """``--extra-saes``: each folder (named by folder) or ``release/sae_id`` (named so,
    "/" written "__"), loaded through :func:`bae_lens.io.load_sae_or_pretrained`."""
    from bae_lens.io import load_sae_or_pretrained, pretrained_ref

    extra = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name = item.replace("/", "__") if pretrained_ref(item) else Path(item).name
        if name in extra or name in DICTIONARIES:
            raise ValueError(f"--extra-saes {item}: the name {name!r} is taken")
        extra[name] = load_sae_or_pretrained(item, device=device, dtype=dtype)
    return extra


def run(args: argparse.Namespace) -> int:
    from bae_lens import models

    check_run_arguments(args)
    check_compare(args)
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import load_eval_tokens

    set_threads(args.threads)
    started = time.time()
    names = [n.strip() for n in args.dictionaries.split(",") if n.strip()]
    check_dictionaries(names)
    extra = load_extra_saes(args.extra_saes, args.device, args.dtype)  # fail before the model
    model_name = args.model or models.EMBEDDED_MODEL_NAME
    model = models.load_model(model_name, device=args.device, dtype=resolve_dtype(args.dtype))
    train_set = load_data(
        args.dataset, "train", eval_split=args.eval_split, tokens=args.training_tokens
    )
    tokens = load_eval_tokens(
        model, args.dataset, args.context_size, args.eval_sequences, args.eval_split
    )
    settings = CompareSettings(
        hook=args.hook,
        expansion=args.expansion,
        training_tokens=args.training_tokens,
        batch_tokens=args.batch_tokens,
        context_size=args.context_size,
        lr=args.lr,
        seed=args.seed,
        k=args.k,
        l1_coefficient=args.l1_coefficient,
        random_firing_rate=args.random_firing_rate,
        device=args.device,
        dtype=args.dtype,
        model_name=model_name,
    )
    payload = run_compare(
        model,
        train_set,
        tokens,
        names,
        settings,
        args.work_dir,
        args.output,
        reuse=args.reuse,
        keep_cache=args.keep_cache,
        eval_batch_size=args.eval_batch_size,
        wandb=wandb_from_args(args),
        extra_saes=extra,
    )
    payload["wall_seconds"] = round(time.time() - started, 1)
    payload["command"] = "bae-lens compare " + " ".join(sys.argv[2:])
    Path(args.output, "compare.json").write_text(json.dumps(payload, indent=1))
    print((Path(args.output) / "compare.md").read_text())
    print(payload["time_summary"])
    print(f"wall time {payload['wall_seconds']} s; written to {args.output}/")
    return 0
