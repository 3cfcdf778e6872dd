"""Short BAE trials on cached activations, to choose the main job's coefficients.

Collects hook activations of the embedded model once (cached as a .pt file), drops BOS and
massive-activation rows (norm > 10x median, as bae_lens.train does), scales them so the
mean norm is sqrt(d_in) (SAELens's expected_average_only_in), then trains one BAE per
configuration with the SAELens training step (Adam, gradient clipping at 1, like SAETrainer)
and prints, every 25 steps, held-out explained variance, L0, the mean per-bit dependence
(sum_{i != j} |C_ij| / n_bits of the held-out code) and the bits never / always on.

    python benchmarks/coefficient_trials.py --steps 150 \
        '{"entropy_coefficient": 0.05}' '{"entropy_coefficient": 0.05, "covariance_coefficient": 30}'
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from sae_lens.saes.sae import TrainStepInput

from bae_lens import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.corpus import load_embedded_corpus
from bae_lens.evaluate import build_eval_tokens
from bae_lens.models import load_model


def collect(hook: str, layer: int, n_sequences: int, split: str, cache: Path) -> torch.Tensor:
    if cache.exists():
        return torch.load(cache, weights_only=True)
    model = load_model()
    tok = model.tokenizer
    texts = load_embedded_corpus(split).shuffle(seed=0)["text"]
    tokens = build_eval_tokens(tok, texts, 128, n_sequences, tok.bos_token_id)
    rows = []
    for i in range(0, len(tokens), 16):
        _, act = model.run_with_cache(tokens[i : i + 16], names_filter=hook, stop_at_layer=layer)
        rows.append(act[hook][:, 1:].flatten(0, 1).clone())  # BOS dropped
    acts = torch.cat(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(acts, cache)
    return acts


def drop_outliers(acts: torch.Tensor, factor: float = 10.0) -> torch.Tensor:
    norms = acts.norm(dim=-1)
    return acts[norms <= factor * norms.median()]


@torch.no_grad()
def held_out(sae: BinaryAutoencoderTraining, x: torch.Tensor) -> dict[str, float]:
    bits = sae.encode_bits(x)
    recon = sae.decode(bits)
    ev = 1 - (x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    hc = bits - bits.mean(0)
    cov = hc.T @ hc / len(bits)
    dependence = (cov.abs().sum() - cov.diagonal().abs().sum()) / bits.shape[1]
    rates = bits.mean(0)
    return {"ev": round(float(ev), 4), "l0": round(float(bits.sum(1).mean()), 1),
            "dependence_per_bit": round(float(dependence), 3),
            "never_on": int((rates == 0).sum()), "always_on": int((rates == 1).sum())}  # fmt: skip


def trial(train: torch.Tensor, test: torch.Tensor, options: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    cfg = BinaryAutoencoderTrainingConfig(d_in=train.shape[1], d_sae=4 * train.shape[1], **options)
    sae = BinaryAutoencoderTraining(cfg)
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    order = torch.randperm(len(train))
    curve, started = [], time.time()
    for step in range(args.steps):
        start = (step * args.batch) % (len(train) - args.batch)
        x = train[order[start : start + args.batch]]
        coefficients = {
            "entropy": cfg.entropy_coefficient,
            "covariance": cfg.covariance_coefficient,
        }
        out = sae.training_forward_pass(TrainStepInput(x, coefficients, None, step, False))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 25 == 0 or step == args.steps - 1:
            curve.append({"step": step, **held_out(sae, test)})
    return {"options": options, "final": curve[-1], "curve": curve,
            "seconds": round(time.time() - started, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "configs", nargs="+", help="JSON dicts of BinaryAutoencoderTrainingConfig fields"
    )
    p.add_argument("--hook", default="blocks.14.hook_resid_post")
    p.add_argument("--layer", type=int, default=15, help="stop_at_layer for the hook")
    p.add_argument("--train-sequences", type=int, default=2400)
    p.add_argument("--eval-sequences", type=int, default=160)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=".cache/trials")
    p.add_argument("--out", default="benchmarks/results/coefficient_trials.jsonl")
    args = p.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache)
    train = drop_outliers(collect(args.hook, args.layer, args.train_sequences, "train",
                                  cache / "train.pt"))  # fmt: skip
    test = drop_outliers(collect(args.hook, args.layer, args.eval_sequences, "eval",
                                 cache / "eval.pt"))  # fmt: skip
    scale = math.sqrt(train.shape[1]) / train.norm(dim=-1).mean()
    with open(args.out, "a") as f:
        for text in args.configs:
            result = trial(train * scale, test * scale, json.loads(text), args)
            print(json.dumps(result["options"]), result["final"], f"{result['seconds']} s")
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
