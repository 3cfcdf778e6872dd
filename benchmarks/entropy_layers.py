"""Entropy of the embedded model's hidden states per layer and per token position
(arXiv 2509.20997 section 3.1: "layer information bandwidth"; a rise with position, then
saturation).

One forward pass (run_with_cache over every hooked layer) on held-out text of the embedded
corpus; per layer, a BAE of d_sae = 4 * d_model trained until its held-out entropy and
EV plateau (within --steps; the convergence flag and trajectory go into the JSON) on the
cached hook_resid_post activations (BOS dropped; rows with norm > 10x median left out of
training; train_set_bae's defaults: entropy price 0.05, covariance 30), then the entropy of the set of all tokens. Per position: with the
BAE of one middle layer, the entropy of the set of hidden states at position i (one per
sequence) for each i = 1..context-1. Trained BAEs are saved under --saes.

    python benchmarks/entropy_layers.py --out benchmarks/results/entropy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bae_lens.corpus import load_embedded_corpus
from bae_lens.entropy import estimate_entropy, train_set_bae
from bae_lens.evaluate import build_eval_tokens
from bae_lens.hidden_states import collect_hidden_states, layer_hooks
from bae_lens.models import load_model


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    layers = result["layers"]
    ax.plot([v["layer"] for v in layers], [v["entropy_bits"] for v in layers], "o-")
    ax.set(xlabel="layer (hook_resid_post)", ylabel="entropy of the token set (bits)",
           title=f"SmolLM2-135M-Instruct, {result['n_tokens']} tokens")  # fmt: skip
    pos = result["per_position"]
    ax2.plot(range(1, len(pos["entropy_bits"]) + 1), pos["entropy_bits"])
    ax2.set(xlabel="token position", ylabel="entropy (bits)",
            title=f"layer {pos['layer']}, {pos['n_sequences']} sequences per position")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", default="2,6,10,14,18,22,26,29")
    p.add_argument("--position-layer", type=int, default=14)
    p.add_argument("--sequences", type=int, default=240)
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2000,
                   help="step budget per BAE; training stops at the held-out plateau")  # fmt: skip
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument("--saes", default=".cache/entropy/saes", help="where trained BAEs go")
    p.add_argument("--out", default="benchmarks/results/entropy")
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    layers = [int(v) for v in args.layers.split(",")]
    if args.position_layer not in layers:
        raise ValueError(f"--position-layer {args.position_layer} must be one of --layers")
    model = load_model()
    hooks = layer_hooks(model, layers)
    tok = model.tokenizer
    assert tok is not None  # the embedded model always has one
    texts = load_embedded_corpus("eval")["text"]
    tokens = build_eval_tokens(tok, texts, args.context_size, args.sequences, tok.bos_token_id)
    states = collect_hidden_states(model, tokens, hooks, progress=True)
    forward_s = time.time() - started
    del model
    saes = Path(args.saes)
    saes.mkdir(parents=True, exist_ok=True)
    result: dict = {"layers": [], "n_tokens": int(tokens[:, 1:].numel())}
    for layer, hook in zip(layers, hooks, strict=True):
        t = time.time()
        x = states[hook][:, 1:]  # [n_seq, pos, d]; BOS dropped
        sae = train_set_bae(x.reshape(-1, x.shape[-1]), args.expansion * x.shape[-1],
                            steps=args.steps, batch_size=args.batch, progress=True,
                            early_stop=True)  # fmt: skip
        torch.save(sae.state_dict(), saes / f"layer{layer}.pt")
        est = estimate_entropy(sae, x)._replace(convergence=sae.convergence)  # type: ignore[attr-defined]
        result["layers"].append({"layer": layer, **est.to_dict(with_rates=False),
                                 "seconds": round(time.time() - t, 1)})  # fmt: skip
        conv = sae.convergence  # type: ignore[attr-defined]
        flag = f"converged in {conv.steps} steps" if conv.converged else (
            f"NOT CONVERGED after {conv.steps} steps")  # fmt: skip
        print(f"layer {layer:2d}: {est.entropy_bits:8.1f} bits, informative "
              f"{est.n_informative}/{est.n_bits}, {flag}, {time.time() - t:.0f} s",
              flush=True)  # fmt: skip
        if layer == args.position_layer:
            per_pos = [estimate_entropy(sae, x[:, i]) for i in range(x.shape[1])]
            result["per_position"] = {
                "layer": layer,
                "n_sequences": int(x.shape[0]),
                "entropy_bits": [round(e.entropy_bits, 3) for e in per_pos],
                "n_informative": [e.n_informative for e in per_pos],
            }
    result.update({
        "command": "python benchmarks/entropy_layers.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "forward_seconds": round(forward_s, 1),
        "wall_seconds": round(time.time() - started, 1),
        "torch": torch.__version__, "device": "cpu, 1 thread",
    })  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers_positions.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "layers_positions.png")
    print(f"wrote {out}/layers_positions.json/.png in {result['wall_seconds']} s")


if __name__ == "__main__":
    main()
