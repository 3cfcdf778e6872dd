"""``bae-lens entropy``: entropy of hidden-state sets per layer and position, or along an
in-context-learning curve (:mod:`bae_lens.entropy`, :mod:`bae_lens.icl`)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bae_lens.bae import BinaryAutoencoderTrainingConfig
from bae_lens.cli.preflight import add_runtime_arguments, check_entropy
from bae_lens.config_args import add_config_options
from bae_lens.entropy import DEFAULT_INFORMATIVE_THRESHOLD, NORMALIZATIONS, entropy_by_layer
from bae_lens.hidden_states import collect_hidden_states, layer_hooks
from bae_lens.runtime import resolve_dtype, set_threads

ICL_CONTROLS = ("random-labels", "none")
"""``--icl-control`` values: the random-label control is on unless 'none'."""

SET_ENTROPY_DEFAULTS = {"entropy_coefficient": 0.05, "covariance_coefficient": 30.0}
"""A set's entropy is the rate of a BAE priced per bit of entropy (train_set_bae's
defaults); the main job's price per firing does not apply here."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="TransformerLens model (default: the embedded SmolLM2-135M-Instruct; "
        "gemma-3-270m loads offline once its optional package is installed)",
    )
    p.add_argument("--layers", default="14", help="comma-separated layers (hook_resid_post)")
    p.add_argument("--sae", default=None, help="a saved BAE (SAELens folder) to use, one layer")
    p.add_argument(
        "--icl",
        action="store_true",
        help="in-context learning: entropy at the label-prefix token of k-shot "
        "sentiment prompts (movie reviews) instead of corpus text; writes a PNG",
    )
    p.add_argument("--ks", default="0,1,2,4,8", help="with --icl: numbers of demonstrations")
    p.add_argument(
        "--icl-control",
        default="random-labels",
        choices=ICL_CONTROLS,
        help="with --icl: 'random-labels' also runs every prompt with k > 0 again with each "
        "demonstration's label drawn at random (same prompts, lengths and query), a second "
        "curve beside the real one without which a falling entropy says nothing about "
        "learning; costs as many forward passes again. 'none' skips it",
    )
    p.add_argument("--n-prompts", type=int, default=200, help="with --icl: prompts per k")
    p.add_argument(
        "--max-chars",
        type=int,
        default=100,
        help="with --icl: use review snippets of at most this many characters",
    )
    p.add_argument("--sequences", type=int, default=64, help="sequences of the eval split")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_model")
    p.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="step budget of each BAE; training stops earlier once the held-out entropy and "
        "explained variance plateau, and an estimate whose BAE never plateaued is flagged "
        "NOT CONVERGED",
    )
    p.add_argument(
        "--no-early-stop", action="store_true", help="train every --steps step (still flagged)"
    )
    p.add_argument("--batch-size", type=int, default=512, help="BAE minibatch (rows)")
    add_config_options(
        p,
        BinaryAutoencoderTrainingConfig,
        ["entropy_coefficient", "covariance_coefficient"],
        SET_ENTROPY_DEFAULTS,
    )
    p.add_argument(
        "--auto-price",
        action="store_true",
        help="choose each layer's entropy price from its data (the knee of a short sweep of "
        "256-bit BAEs, bae_lens.entropy_price; 9 trainings of at most min(--steps, 1000) steps "
        "per layer) instead of "
        "--entropy-coefficient; the price and its sweep are written to the JSON, and a set "
        "with no clear knee is flagged",
    )
    p.add_argument(
        "--normalize",
        default="mean_norm",
        choices=NORMALIZATIONS,
        help="scaling of each set before its BAE trains (train_set_bae)",
    )
    p.add_argument(
        "--states",
        default=None,
        help="with --icl: safetensors file of the label-prefix states; read when it "
        "exists (no model run), else written after the model run",
    )
    p.add_argument("--threshold", type=float, default=DEFAULT_INFORMATIVE_THRESHOLD)
    p.add_argument("--per-position", action="store_true", help="also entropy per position")
    p.add_argument("--output", default="entropy.json", help="JSON file to write")
    add_runtime_arguments(p)  # the model and --sae; the set BAEs train in float32 on the CPU
    p.add_argument("--seed", type=int, default=0)  # fmt: skip


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "early_stop": not args.no_early_stop,
        "batch_size": args.batch_size,
        "entropy_coefficient": args.entropy_coefficient,
        "covariance_coefficient": args.covariance_coefficient,
        "normalize": args.normalize,
    }


def _icl_command(model_name: str, args: argparse.Namespace, layers: list[int]) -> dict[str, Any]:
    from bae_lens import icl
    from bae_lens.models import load_model
    from bae_lens.sentiment_data import load_movie_reviews

    ks = [int(v) for v in str(args.ks).split(",") if v.strip()]
    random_labels = args.icl_control == "random-labels"
    if args.states is not None and Path(args.states).is_file():
        states = icl.load_icl_states(args.states)
        if (states.ks, states.layers, states.n_prompts) != (ks, layers, args.n_prompts):
            raise ValueError(
                f"{args.states!r} holds ks={states.ks}, layers={states.layers}, "
                f"n_prompts={states.n_prompts}; asked for ks={ks}, layers={layers}, "
                f"n_prompts={args.n_prompts}"
            )
        if random_labels and states.random_labels is None:
            print(
                f"note: {args.states!r} holds no random-label control states; the curve is "
                "drawn without the control (a new --states file collects them)"
            )
        if not random_labels:
            states = states._replace(random_labels=None)
    else:
        examples = [e for e in load_movie_reviews() if len(e[0]) <= args.max_chars]
        model = load_model(model_name, device=args.device, dtype=resolve_dtype(args.dtype))
        layer_hooks(model, layers)  # a layer the model lacks fails before any work
        states = icl.collect_icl_states(
            model, examples, ks, layers, n_prompts=args.n_prompts, seed=args.seed,
            random_labels=random_labels, progress=True,
        )  # fmt: skip
        if args.states is not None:
            icl.save_icl_states(states, args.states)
    curve = icl.icl_entropy_curve(
        states, expansion=args.expansion, seed=args.seed, progress=True, **_train_options(args)
    )
    for layer, conv in (curve.convergence or {}).items():
        if not conv["converged"]:
            print(f"layer {layer}: BAE NOT CONVERGED after {conv['steps']} steps")
    control = curve.random_labels
    for i, (k, accuracy) in enumerate(zip(curve.ks, curve.accuracy, strict=True)):
        bits = " ".join(f"{curve.entropy_bits[la][i]:7.1f}" for la in layers)
        print(f"k={k:<3d} accuracy {accuracy:.3f}  entropy by layer {bits}")
        if control is not None:
            bits = " ".join(f"{control.entropy_bits[la][i]:7.1f}" for la in layers)
            print(
                f"  rnd accuracy {control.accuracy[i]:.3f}  entropy by layer {bits}  (random labels)"
            )
    png = str(Path(args.output).with_suffix(".png"))
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    icl.plot_icl_curve(curve, model_name, png)
    print(f"wrote {png}")
    return {**curve.to_dict(), "max_chars": args.max_chars}


def _corpus_command(model_name: str, args: argparse.Namespace, layers: list[int]) -> dict[str, Any]:
    from bae_lens.corpus import load_embedded_corpus
    from bae_lens.evaluate import build_eval_tokens
    from bae_lens.models import load_model

    model = load_model(model_name, device=args.device, dtype=resolve_dtype(args.dtype))
    hooks = layer_hooks(model, layers)
    tok = model.tokenizer
    if tok is None:
        raise ValueError("the model has no tokenizer: cannot tokenize the corpus")
    texts = load_embedded_corpus("eval")["text"]
    tokens = build_eval_tokens(tok, texts, args.context_size, args.sequences, tok.bos_token_id)
    states = collect_hidden_states(model, tokens, hooks, progress=True)
    sae = None
    if args.sae is not None:
        from bae_lens.io import load_bae

        sae = load_bae(args.sae, device=args.device, dtype=args.dtype)
    sets = {hook: x[:, 1:] for hook, x in states.items()}  # BOS dropped
    prices: dict[str, dict[str, Any]] = {}
    if args.auto_price and sae is None:
        from bae_lens.entropy_price import auto_price

        for hook, x in sets.items():
            choice = auto_price(x.reshape(-1, x.shape[-1]), normalize=args.normalize,
                                seed=args.seed, batch_size=args.batch_size,
                                steps=min(args.steps, 1000))  # fmt: skip
            prices[hook] = choice.to_dict()
            print(f"{hook:<28} price {choice.price:.4g} ({choice.relative_price:.3g} of the "
                  f"variance per row): {choice.reason}")  # fmt: skip
    layers_result: dict[str, dict[str, Any]] = {}
    for hook, x in sets.items():
        options = _train_options(args)
        if hook in prices:
            options["entropy_coefficient"] = prices[hook]["price"]
        layers_result |= entropy_by_layer(
            {hook: x}, sae=sae, expansion=args.expansion, threshold=args.threshold,
            per_position=args.per_position, seed=args.seed, **options,
        )  # fmt: skip
        if hook in prices:
            layers_result[hook]["price"] = prices[hook]
    for hook, entry in layers_result.items():
        conv = entry.get("convergence")
        flag = "" if conv is None else (
            f"  converged in {conv['steps']} steps" if conv["converged"]
            else f"  NOT CONVERGED after {conv['steps']} steps"
        )  # fmt: skip
        if "price" in entry and not entry["price"]["plateau"]:
            flag += "  PRICE WITHOUT A CLEAR KNEE"
        tree = entry.get("tree_bound_bits")
        bound = "" if tree is None else f" (pairwise tree bound {tree:.1f})"
        print(
            f"{hook:<28} H = {entry['entropy_bits']:8.1f} bits{bound}  informative "
            f"{entry['n_informative']}/{entry['n_bits']}  over {entry['n_samples']} tokens{flag}"
        )
    return {"layers": layers_result, "n_sequences": int(tokens.shape[0])}


def run(args: argparse.Namespace) -> int:
    """``bae-lens entropy``: entropy of a model's hidden states per layer (and per position)
    on held-out text of the embedded corpus, or with ``--icl`` at the label-prefix token of
    k-shot prompts; prints a table and writes JSON (and, with ``--icl``, a PNG)."""
    from bae_lens.models import EMBEDDED_MODEL_NAME

    layers = [int(v) for v in str(args.layers).split(",") if v.strip()]
    if args.sae is not None and (len(layers) != 1 or args.icl):
        raise ValueError(f"--sae takes one layer and no --icl, got --layers {args.layers!r}")
    check_entropy(args, layers)  # before the model loads
    set_threads(args.threads)
    started = time.time()
    model_name = args.model or EMBEDDED_MODEL_NAME
    command = _icl_command if args.icl else _corpus_command
    results = {"model": model_name, **command(model_name, args, layers)}
    results["seconds"] = round(time.time() - started, 1)
    results["command"] = "bae-lens entropy " + " ".join(sys.argv[2:])
    results["versions"] = {"torch": torch.__version__, "python": platform.python_version()}
    results["device"] = (
        f"{args.device} ({platform.machine()}), {args.dtype}, {torch.get_num_threads()} thread(s)"
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results))
    print(f"wrote {args.output}")
    return 0
