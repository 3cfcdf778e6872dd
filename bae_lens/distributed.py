"""Data-parallel BAE training with minibatch statistics over the GLOBAL batch.

The entropy and dependence penalties are statistics of the whole minibatch
(../shared/BAE_METHOD.md section 2). Under data parallelism each rank holds a shard, so
the code is gathered from every rank before the penalties are formed (:func:`gather_rows`,
used by ``BinaryAutoencoderTraining.calculate_aux_loss``).
``torch.distributed.nn.functional.all_gather`` is differentiable: its backward sums, on
each rank, the gradients that every rank's (identical) penalty sends to that rank's rows,
so after the usual averaging of parameter gradients across ranks the penalty's gradient
equals that of the single-process penalty on the concatenated batch. The MSE is a mean
over each rank's (equal-sized) shard, so the average of the ranks' MSE gradients is the
gradient of the global mean.

SAELens's trainer is not DDP-aware (``training_forward_pass`` is not a module forward,
so ``DistributedDataParallel`` hooks would not fire). :func:`train_data_parallel` is the
smallest loop that is: every rank takes its contiguous shard of each global batch of a
fixed activation stream and takes :func:`bae_lens.train_step.train_step` (the step of
``SAETrainer._train_step``: SAELens's ``training_forward_pass``, clipping to norm 1, Adam,
the learning-rate / coefficient schedulers) with parameter gradients averaged by
``all_reduce`` between backward and clipping. Every rank starts from rank 0's weights and
applies the same averaged gradient, so the Adam state stays identical without being
communicated. With one process (no process group) it is plain single-process training,
the reference the 2-process run is tested against. A non-finite loss stops the rank that
sees it before the update (the penalties are global, the MSE is per shard); torchrun
then stops the others.

Launch (CPU: gloo; GPUs: NCCL, one GPU per rank)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m bae_lens.distributed \\
        --activations acts.safetensors --output runs/bae_ddp \\
        --batch-size 4096 --steps 2000 --expansion 4 --entropy-coefficient 0.05

``acts.safetensors`` holds one tensor ``"activations"`` ``[n, d_in]`` (as written by
``bae-lens import-legacy --hidden-states`` or ``safetensors.torch.save_file``);
``--batch-size`` is the GLOBAL batch, split evenly over the ranks. ``--standalone`` picks
a free rendezvous port on one machine; across machines use torchrun's ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint`` as usual. Run without torchrun, the same command
trains in one process. Rows are not outlier-filtered here (``bae_lens.train.OutlierFilter``
drops a varying number of rows per rank, which would break the equal-shard assumption):
filter the stream beforehand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from bae_lens.collectives import (
    all_reduce_mean,
    average_gradients,
    broadcast_parameters,
    gather_rows,
    global_firing_rates,
    rank_and_world,
    shard_rows,
)
from bae_lens.runtime import set_threads
from bae_lens.train_step import SAELENS_MAX_GRAD_NORM, TrainingState, train_step

logger = logging.getLogger(__name__)


def iterate_batches(
    activations: Float[Tensor, "n d_in"], batch_size: int, n_steps: int, seed: int = 0
) -> Iterator[Float[Tensor, "batch d_in"]]:
    """``n_steps`` global batches from ``activations`` ``[n, d_in]``: each epoch a fresh
    permutation from a generator seeded with ``seed + epoch`` (the same on every rank);
    an epoch's last partial batch is skipped."""
    n = activations.shape[0]
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size={batch_size} must be in [1, {n}] (rows of activations)")
    per_epoch = n // batch_size
    for step in range(n_steps):
        epoch, index = divmod(step, per_epoch)
        if index == 0:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        yield activations[order[index * batch_size : (index + 1) * batch_size]]


def _globalise_last_record(sae: Any, output: Any) -> None:
    """Make the record a BAE just appended to ``training_log`` describe the global batch:
    the BAE computed mse_loss and code statistics from this rank's shard."""
    from bae_lens.penalties import code_stats_from_rates

    record = sae.training_log[-1]
    record["mse_loss"] = float(all_reduce_mean(output.losses["mse_loss"]))
    bits = sae.code(output.hidden_pre.detach())
    record.update(code_stats_from_rates(global_firing_rates(bits))._asdict())


def train_data_parallel(
    sae: Any,
    batches: Iterator[Float[Tensor, "batch d_in"]],
    n_steps: int,
    *,
    lr: float = 1e-3,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    lr_scheduler_name: str = "constant",
    lr_warm_up_steps: int = 0,
    lr_decay_steps: int = 0,
    max_grad_norm: float = SAELENS_MAX_GRAD_NORM,
) -> list[dict[str, float]]:
    """Train ``sae`` (a SAELens ``TrainingSAE``) on ``n_steps`` GLOBAL batches.

    Call on every rank with the same arguments and the same ``batches`` stream; rank r
    trains on shard r of each batch. Returns, per step, the global losses (every rank
    gets the same list). The BAE's ``training_log`` holds global statistics too.
    No dead-neuron mask is tracked (``dead_neuron_mask=None``): fine for the BAE and
    L1 SAEs, not for architectures whose auxiliary loss needs it (TopK, BatchTopK).
    """
    norm = sae.cfg.normalize_activations
    if norm in ("expected_average_only_in", "covariance_whitening"):
        raise ValueError(
            f"normalize_activations={norm!r} needs SAELens's activation scaler, which "
            "train_data_parallel does not run: scale the activation stream beforehand and "
            "use 'none' (or 'layer_norm', applied inside the SAE)"
        )
    rank, world = rank_and_world()
    broadcast_parameters(sae)
    state = TrainingState.for_sae(
        sae, lr=lr, n_steps=n_steps, adam_betas=adam_betas,
        lr_scheduler_name=lr_scheduler_name, lr_warm_up_steps=lr_warm_up_steps,
        lr_decay_steps=lr_decay_steps,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    for step, batch in zip(range(n_steps), batches, strict=False):
        shard = shard_rows(batch.to(sae.device, sae.dtype), rank, world)
        if getattr(sae, "_needs_data_init", False) and step == 0:
            sae.initialize_from_batch(gather_rows(shard))  # the global batch, as 1 process
        n_records = len(getattr(sae, "training_log", ()))
        output = train_step(
            sae, shard, state, reduce_gradients=average_gradients, max_grad_norm=max_grad_norm
        )
        if len(getattr(sae, "training_log", ())) > n_records:
            _globalise_last_record(sae, output)
        # entropy and covariance losses are already global; the MSE is a shard mean
        losses = {k: float(all_reduce_mean(v.detach())) for k, v in output.losses.items()}
        history.append({"step": float(step), "loss": sum(losses.values()), **losses})
    return history


# --- command line: python -m torch.distributed.run --nproc_per_node N -m bae_lens.distributed


def load_activations(path: str | Path) -> Float[Tensor, "n d_in"]:
    """The ``"activations"`` tensor ``[n, d_in]`` of a safetensors file, checked."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"activations file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            if "activations" not in f.keys():  # noqa: SIM118
                raise ValueError(f"{str(path)!r} has no tensor 'activations' ({list(f.keys())})")
            acts = f.get_tensor("activations")
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({err})") from None
    if acts.ndim != 2 or acts.shape[0] == 0 or not acts.is_floating_point():
        raise ValueError(
            f"{str(path)!r}: activations of shape {tuple(acts.shape)} and dtype {acts.dtype}: "
            "expected a non-empty floating-point [n, d_in] tensor"
        )
    if not torch.isfinite(acts).all():
        raise ValueError(f"{str(path)!r}: activations contain NaN or inf")
    return acts.float()


def build_arg_parser() -> argparse.ArgumentParser:
    from bae_lens.bae import BAE_OPTIONS, BinaryAutoencoderTrainingConfig
    from bae_lens.config_args import add_config_options

    p = argparse.ArgumentParser(
        prog="python -m torch.distributed.run --nproc_per_node N -m bae_lens.distributed",
        description="Data-parallel BAE training on a fixed activation stream (see module doc).",
    )
    p.add_argument("--activations", required=True, help="safetensors with 'activations' [n, d]")
    p.add_argument("--output", required=True, help="output directory (SAELens format)")
    p.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_in")
    p.add_argument("--batch-size", type=int, default=1024, help="GLOBAL rows per step")
    p.add_argument("--steps", type=int, default=1000, help="training steps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-every", type=int, default=10, help="training_log period (steps)")
    p.add_argument("--dtype", default="float32", help="SAE dtype")
    add_config_options(p, BinaryAutoencoderTrainingConfig, BAE_OPTIONS)
    return p


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    """Train from parsed arguments; rank 0 writes the SAE, training_log.jsonl and
    losses.json (global per-step losses) to ``args.output``."""
    from bae_lens.bae import BAE_OPTIONS, BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
    from bae_lens.config_args import config_values
    from bae_lens.train import write_training_log

    if args.steps < 1:
        raise ValueError(
            f"--steps {args.steps}: must be >= 1 (0 steps would save an untrained SAE)"
        )
    rank, world = rank_and_world()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    acts = load_activations(args.activations)
    if args.batch_size % world != 0:
        raise ValueError(f"--batch-size={args.batch_size} is not a multiple of {world} ranks")
    d_in = acts.shape[1]
    cfg = BinaryAutoencoderTrainingConfig(
        d_in=d_in,
        d_sae=args.expansion * d_in,
        device=device,
        dtype=args.dtype,
        log_every=args.log_every,
        **config_values(args, BAE_OPTIONS),
    )
    torch.manual_seed(args.seed)  # same init and the same RNG draws on every rank
    sae = BinaryAutoencoderTraining(cfg)
    history = train_data_parallel(
        sae, iterate_batches(acts, args.batch_size, args.steps, args.seed), args.steps, lr=args.lr
    )
    if rank == 0:
        out = Path(args.output)
        sae.save_inference_model(out)
        write_training_log(sae, out)
        (out / "losses.json").write_text(json.dumps(history))
        logger.info("rank 0 of %d saved %s", world, out)
    return history


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_arg_parser().parse_args(argv)
    set_threads(None)  # bae_lens.runtime's policy: one thread on <= 2 cores
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"bae_lens.distributed: error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
