"""``bae-lens dashboard``: a static HTML page per feature and an index (:mod:`bae_lens.dashboard`).

Top examples by the graded view of a BAE (burst by default: the margin away from each
bit's majority state) or by activation for any other SAE, on held-out text; the ComSem
description of each feature when a ``bae-lens comsem`` result JSON is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bae_lens.cli.preflight import (
    add_overwrite_argument,
    add_runtime_arguments,
    check_dashboard,
)
from bae_lens.cli.train import EVAL_SPLIT_HELP
from bae_lens.feature_examples import VIEWS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bae-lens dashboard``."""
    p.add_argument("sae", help="saved SAE folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--output", required=True, help="folder for index.html and feature pages")
    p.add_argument("--comsem", default=None, help="a `bae-lens comsem` result (comsem.json)")
    p.add_argument("--comsem-name", default=None, help="the dictionary's name in that file")
    p.add_argument("--features", default=None, help="feature ids, e.g. 3,17,42 (default: "
                   "the ComSem-described ones, then live features from rare to common)")  # fmt: skip
    p.add_argument("--n-features", type=int, default=24, help="pages when --features is not given")
    p.add_argument("--view", default="auto", choices=VIEWS,
                   help="ranking: auto = burst for a BAE, activation for other SAEs")  # fmt: skip
    p.add_argument("--n-top", type=int, default=20, help="top examples per feature")
    p.add_argument("--ignore-positions", default="",
                   help="token positions left out of the ranking, e.g. 1: the first token after "
                        "BOS, whose large residual norm tops many features' margins")  # fmt: skip
    p.add_argument("--model", default=None, help="model name (default: the SAE's metadata)")
    p.add_argument("--hook", default=None, help="override the SAE's recorded hook")
    p.add_argument("--dataset", default="embedded", help="as for `bae-lens train` (eval split)")
    p.add_argument("--eval-split", default="auto", help=EVAL_SPLIT_HELP)
    p.add_argument("--sequences", type=int, default=160, help="held-out sequences")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    add_runtime_arguments(p)
    add_overwrite_argument(p)


def run(args: argparse.Namespace) -> int:
    """Mine top examples, pick features, write the pages."""
    from bae_lens import models
    from bae_lens.dashboard import load_comsem_descriptions, pick_features, write_dashboard
    from bae_lens.evaluate import load_eval_tokens
    from bae_lens.feature_examples import mine_examples
    from bae_lens.io import load_sae
    from bae_lens.runtime import resolve_dtype, set_threads

    check_dashboard(args)
    set_threads(args.threads)
    descriptions = load_comsem_descriptions(args.comsem, args.comsem_name) if args.comsem else {}
    sae = load_sae(args.sae, device=args.device, dtype=args.dtype)
    if args.model is not None:
        model = models.load_model(args.model, device=args.device, dtype=resolve_dtype(args.dtype))
    else:
        model = models.load_model_for_sae(args.sae, device=args.device)
        model = model.to(resolve_dtype(args.dtype))
    tokens = load_eval_tokens(model, args.dataset, args.context_size, args.sequences,
                              args.eval_split)  # fmt: skip
    n_features = sae.cfg.d_sae * getattr(sae.cfg, "bits_per_feature", 1)
    chosen = [int(f) for f in args.features.split(",") if f.strip()] if args.features else None
    examples = mine_examples(
        model, sae, tokens, args.hook, view=args.view, n_top=args.n_top,
        track=chosen or list(range(n_features)), batch_size=args.batch_size,
        ignore_positions=tuple(int(x) for x in args.ignore_positions.split(",") if x.strip()),
    )  # fmt: skip
    features = chosen or pick_features(examples, args.n_features, sorted(descriptions))
    title = f"{Path(args.sae).name} ({sae.cfg.architecture()}, {sae.cfg.metadata.hook_name})"
    index = write_dashboard(args.output, examples, tokens, model.tokenizer, title=title,
                            features=features, descriptions=descriptions)  # fmt: skip
    (Path(args.output) / "examples.json").write_text(json.dumps(examples.to_json()))
    print(f"{len(features)} feature pages; open {index}")
    return 0
