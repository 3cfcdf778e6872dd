"""``bae-lens import-legacy``: a model (and hidden states) written by the paper's released
code, converted to SAELens's format (:mod:`bae_lens.legacy`)."""

from __future__ import annotations

import argparse

from bae_lens.cli.preflight import add_overwrite_argument, check_import_legacy
from bae_lens.legacy import (
    import_legacy_model,
    load_legacy_hidden_states,
    save_activations,
    save_legacy_import,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="released model .pt (torch.save state dict)")
    p.add_argument("--params", default=None, help="released log .pkl holding 'params'")
    p.add_argument("--hidden-states", default=None, help="released hidden-state .pkl")
    p.add_argument("--layer", type=int, default=None, help="layer of a per-layer pickle")
    p.add_argument("--output", required=True, help="output directory (SAELens format)")
    add_overwrite_argument(p)


def run(args: argparse.Namespace) -> int:
    check_import_legacy(args)
    result = import_legacy_model(args.model, args.params)
    out = save_legacy_import(result, args.output)
    print(f"saved BAE (d_in={result.sae.cfg.d_in}, d_sae={result.sae.cfg.d_sae}) to {out}")
    if args.hidden_states is not None:
        acts = load_legacy_hidden_states(args.hidden_states, args.layer)
        if acts.shape[1] != result.sae.cfg.d_in:
            raise ValueError(
                f"hidden states have d={acts.shape[1]} but the model has d_in={result.sae.cfg.d_in}"
            )
        path = save_activations(acts, out / "activations.safetensors")
        print(f"saved {acts.shape[0]} hidden states to {path}")
    return 0
