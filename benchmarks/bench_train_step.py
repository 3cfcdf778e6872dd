"""Time one SAELens training step of the BAE against SAELens's standard, TopK and JumpReLU SAEs.

One step is what ``SAETrainer._train_step`` does: ``training_forward_pass`` on a
``TrainStepInput``, ``loss.backward()``, ``clip_grad_norm_(.., 1.0)``, ``Adam.step()``,
``zero_grad()``, on one fixed random batch.

- Time: per width, one fresh process builds every model and runs ``--warmup`` steps of
  each (step 0 is where the BAE sets its biases from the batch, as in training); then
  ``--repeats`` rounds time one step of every model in turn, so load that drifts during
  the run (shared machines) hits all models alike. ``ratio`` is the median over rounds of
  (model step / standard-SAE step of the same round); ``ms/step`` the median step.
- Peak memory on CPU: one more fresh process per (width, model), measuring the growth of
  the process's peak resident set size (``ru_maxrss``) over warm-up plus one step:
  activations, autograd temporaries, gradients and Adam state, plus allocator slack; not
  the weights or the input batch. On CUDA: ``torch.cuda.max_memory_allocated`` over the
  same span, less what was allocated before it.

Usage (the committed CPU results, see benchmarks/results/README.md):

    .venv/bin/python benchmarks/bench_train_step.py --out benchmarks/results/train_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

MODELS = (
    "standard",
    "topk",
    "jumprelu",
    "bae",
    "bae+entropy",
    "bae+entropy+abs",
    "bae+entropy+abs_binary",
    "bae+entropy+frobenius",
    "bae+entropy+frobenius_probe",
    "bae+default",
)
# Plain references whose cost grows faster than the SAE's: skipped above --max-reference-d-sae.
REFERENCE_MODELS = ("bae+entropy+abs", "bae+entropy+frobenius")


def build(model: str, d_in: int, d_sae: int, device: str) -> Any:
    """The training SAE named ``model`` (defaults of each SAELens config otherwise)."""
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    import bae_lens  # noqa: F401  (registers "bae")
    from bae_lens.bae import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig

    common = {"d_in": d_in, "d_sae": d_sae, "device": device}
    if model == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(**common))
    if model == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=100, **common))
    if model == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(**common))
    if model == "bae+default":  # the shipped defaults, whatever they are
        from bae_lens.main_job import MAIN_JOB_DEFAULTS

        return BinaryAutoencoderTraining(
            BinaryAutoencoderTrainingConfig(**MAIN_JOB_DEFAULTS, **common)
        )
    parts = model.split("+")
    cfg = BinaryAutoencoderTrainingConfig(
        entropy_coefficient=0.05 if "entropy" in parts else 0.0,
        covariance_coefficient=10.0 if len(parts) == 3 else 0.0,
        covariance_penalty=parts[2] if len(parts) == 3 else "frobenius",
        **common,
    )
    return BinaryAutoencoderTraining(cfg)


def make_step(model: str, spec: dict[str, Any]) -> Any:
    """A closure running one training step of ``model`` (``step(index)``), as SAETrainer does."""
    import torch
    from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput

    device = spec["device"]
    torch.manual_seed(0)
    sae = build(model, spec["d_in"], spec["d_sae"], device)
    sae.train()
    coefficients = {
        name: value.value if isinstance(value, TrainCoefficientConfig) else value
        for name, value in sae.get_coefficients().items()
    }
    x = torch.randn(spec["batch"], spec["d_in"], device=device)  # [batch, d_in]
    optimizer = torch.optim.Adam(sae.parameters(), lr=3e-4)
    autocast = torch.autocast(
        device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=spec["autocast"]
    )

    def step(index: int) -> None:
        with autocast:
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x,
                    coefficients=coefficients,
                    dead_neuron_mask=None,
                    n_training_steps=index,  # 0: the BAE's data-dependent start
                    is_logging_step=False,
                )
            )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step


def time_models(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: all of ``spec["models"]`` at one width, timed in interleaved rounds.

    Every model first runs ``warmup`` steps; then each round times one step of every model
    in turn, so load that drifts over the run hits all models alike. Returns each model's
    step times and the per-round ratio to the first model (the standard SAE).
    """
    import torch

    torch.set_num_threads(spec["threads"])
    steps = {}
    for model in spec["models"]:
        steps[model] = make_step(model, spec)
        for index in range(spec["warmup"]):
            steps[model](index)
    times: dict[str, list[float]] = {model: [] for model in spec["models"]}
    for round_index in range(spec["repeats"]):
        for model, step in steps.items():
            start = time.perf_counter()
            step(spec["warmup"] + round_index)
            times[model].append(time.perf_counter() - start)
    reference = times[spec["models"][0]]
    return {
        model: {
            "times_s": t,
            "median_s": statistics.median(t),
            "round_ratios": [a / b for a, b in zip(t, reference, strict=True)],
        }
        for model, t in times.items()
    }


def peak_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: peak memory of ``spec["model"]`` over its warm-up steps plus one step."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    step = make_step(spec["model"], spec)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    for index in range(spec["warmup"] + 1):
        step(index)
    if device.startswith("cuda"):
        peak_mib = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**10
    return {"peak_mib": peak_mib}


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`time_models` (``spec["models"]``) or :func:`peak_memory` in a fresh
    interpreter."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import sae_lens
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "sae_lens": getattr(sae_lens, "__version__", "unknown"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": args.device,
        "threads": args.threads,
    }
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-in", type=int, default=576, help="input width (SmolLM2-135M: 576)")
    parser.add_argument("--d-sae", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
    parser.add_argument(
        "--larger", action="store_true", help="also run d_sae 32768 and 65536 (slow on CPU)"
    )
    parser.add_argument("--batch", type=int, default=4096, help="tokens per step")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--max-reference-d-sae",
        type=int,
        default=8192,
        help=f"skip the plain references {REFERENCE_MODELS} above this width",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast (as SAELens)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        spec = json.loads(args.worker)
        print(json.dumps(time_models(spec) if "models" in spec else peak_memory(spec)))
        return

    widths = list(args.d_sae) + ([32768, 65536] if args.larger else [])
    models = ["standard"] + [m for m in args.models if m != "standard"]
    wall_start = time.perf_counter()
    rows = []
    header = f"{'d_sae':>6} {'model':30} {'ms/step':>10} {'tok/s':>9} {'x std':>6} {'peak MiB':>9} {'load':>5}"
    print(header)
    for d_sae in widths:
        spec: dict[str, Any] = {
            "d_in": args.d_in,
            "d_sae": d_sae,
            "batch": args.batch,
            "device": args.device,
            "autocast": args.autocast,
            "threads": args.threads,
            "warmup": args.warmup,
            "repeats": args.repeats,
        }
        skipped = [m for m in models if m in REFERENCE_MODELS and d_sae > args.max_reference_d_sae]
        run = [m for m in models if m not in skipped]
        load_before = os.getloadavg()
        timed = spawn({**spec, "models": run})
        load_after = os.getloadavg()
        for model in models:
            row: dict[str, Any] = {"d_sae": d_sae, "model": model}
            if model in skipped:
                limit = args.max_reference_d_sae
                row["skipped"] = f"plain reference, above --max-reference-d-sae={limit}"
                rows.append(row)
                print(f"{d_sae:>6} {model:30} {'skipped':>10}")
                continue
            row.update(timed[model])
            row["ratio_to_standard"] = statistics.median(row["round_ratios"])
            row["tokens_per_s"] = args.batch / row["median_s"]
            row["load_timing"] = [load_before, load_after]
            row["load_memory_run"] = os.getloadavg()
            row.update(spawn({**spec, "model": model}))
            rows.append(row)
            print(
                f"{d_sae:>6} {model:30} {row['median_s'] * 1e3:>10.0f} "
                f"{row['tokens_per_s']:>9.0f} {row['ratio_to_standard']:>6.2f} "
                f"{row['peak_mib']:>9.0f} {load_after[0]:>5.2f}",
                flush=True,
            )
    result = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "wall_s": time.perf_counter() - wall_start,
        "config": {
            "d_in": args.d_in,
            "batch": args.batch,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "autocast_bf16": args.autocast,
            "step": "training_forward_pass + backward + clip_grad_norm_(1.0) + Adam.step + zero_grad",
            "timing": "per width one process; every model warmed up, then `repeats` rounds "
            "timing one step of each model in turn; ratio_to_standard = median over rounds "
            "of (model step / standard step in the same round)",
            "peak_mib": "growth of peak RSS (ru_maxrss) over warm-up + 1 step, one fresh "
            "process per model"
            if args.device == "cpu"
            else "torch.cuda.max_memory_allocated over the steps less memory allocated before",
            "bae": "entropy_coefficient 0.05, covariance_coefficient 10, init_firing_rate 0.05",
        },
        "environment": environment(args),
        "results": rows,
    }
    print(f"wall time {result['wall_s']:.0f} s")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
