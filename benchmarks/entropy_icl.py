"""Entropy of the hidden state at the label-prefix token of k-shot sentiment prompts, per
layer, as k grows (arXiv 2509.20997 section 3.1, in-context learning).

Prompts: "Review: <snippet>\\nSentiment: <positive|negative>\\n\\n" x k, then the query
"Review: <snippet>\\nSentiment:"; every prompt draws its own query and its own k
demonstrations at random (bae_lens.entropy.build_icl_prompts). Data: Rotten Tomatoes
snippets from the vaderSentiment 3.3.2 sdist (bae_lens.sentiment_data; |rating| > 1).
The BAEs are those benchmarks/entropy_layers.py trained on corpus text at each layer; the
entropy of the set of n_prompts label-prefix states is computed for each k and layer.
Also records the accuracy of the next-token choice " positive" vs " negative".

The embedded model, SmolLM2-135M-Instruct, does NOT learn from demonstrations (accuracy
flat or falling with k; ../shared/OFFLINE.md): this curve is a model without ICL.

    python benchmarks/entropy_icl.py --out benchmarks/results/entropy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bae_lens import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.entropy import (
    LABEL_WORDS,
    build_icl_prompts,
    estimate_entropy,
    last_token_states,
    layer_hooks,
)
from bae_lens.models import load_model
from bae_lens.sentiment_data import load_movie_reviews


def load_bae(path: Path, d_in: int, d_sae: int) -> BinaryAutoencoderTraining:
    sae = BinaryAutoencoderTraining(
        BinaryAutoencoderTrainingConfig(d_in=d_in, d_sae=d_sae, init_firing_rate=None)
    )
    sae.load_state_dict(torch.load(path, weights_only=True))
    return sae.eval()


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ks = result["ks"]
    for layer, values in result["entropy_bits"].items():
        ax.plot(ks, values, "o-", label=f"layer {layer}")
    ax.set(xlabel="k (demonstrations)", ylabel="entropy at label-prefix token (bits)",
           title=f"{result['model']} (no reliable ICL, see README)")  # fmt: skip
    ax.legend(fontsize=7)
    ax2.plot(ks, result["accuracy"], "o-")
    ax2.set(xlabel="k", ylabel="accuracy ( positive vs negative)", ylim=(0, 1),
            title=f"{result['n_prompts']} prompts per k (binomial s.e. ~0.07)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", default="2,6,10,14,18,22,26,29")
    p.add_argument("--ks", default="0,1,2,4,8")
    p.add_argument("--n-prompts", type=int, default=48)
    p.add_argument("--max-chars", type=int, default=100, help="keep snippets this short")
    p.add_argument("--saes", default=".cache/entropy/saes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/entropy")
    p.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.replot:
        out = Path(args.out)
        plot(json.loads((out / "icl.json").read_text()), out / "icl.png")
        return
    started = time.time()
    layers = [int(v) for v in args.layers.split(",")]
    ks = [int(v) for v in args.ks.split(",")]
    examples = [e for e in load_movie_reviews() if len(e[0]) <= args.max_chars]
    model = load_model()
    hooks = layer_hooks(model, layers)
    d = model.cfg.d_model
    saes = {layer: load_bae(Path(args.saes) / f"layer{layer}.pt", d, 4 * d) for layer in layers}
    tok = model.tokenizer
    assert tok is not None  # the embedded model always has one
    label_ids = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in LABEL_WORDS]
    result: dict = {"model": "SmolLM2-135M-Instruct", "ks": ks, "n_prompts": args.n_prompts,
                    "n_examples": len(examples), "entropy_bits": {str(la): [] for la in layers},
                    "n_informative": {str(la): [] for la in layers}, "accuracy": []}  # fmt: skip
    for k in ks:
        prompts = build_icl_prompts(examples, k, args.n_prompts, seed=args.seed * 1000 + k)
        got = last_token_states(model, [q.text for q in prompts], hooks, progress=True)
        choice = got.logits[:, label_ids].argmax(dim=1)
        accuracy = float((choice == torch.tensor([q.label for q in prompts])).float().mean())
        result["accuracy"].append(round(accuracy, 4))
        for layer, hook in zip(layers, hooks, strict=True):
            est = estimate_entropy(saes[layer], got.states[hook])
            result["entropy_bits"][str(layer)].append(round(est.entropy_bits, 3))
            result["n_informative"][str(layer)].append(est.n_informative)
        print(f"k={k}: accuracy {accuracy:.3f}, entropy by layer "
              + " ".join(f"{result['entropy_bits'][str(la)][-1]:.1f}" for la in layers),
              flush=True)  # fmt: skip
    result.update({
        "command": "python benchmarks/entropy_icl.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "wall_seconds": round(time.time() - started, 1),
        "torch": torch.__version__, "device": "cpu, 1 thread",
    })  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "icl.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "icl.png")
    print(f"wrote {out}/icl.json/.png in {result['wall_seconds']} s")


if __name__ == "__main__":
    main()
