"""Collective operations that the minibatch penalties need under data parallelism.

The entropy and dependence penalties are statistics of the whole minibatch
(../shared/BAE_METHOD.md section 2); under data parallelism each rank holds a shard, so the
BAE gathers its code from every rank (:func:`gather_rows`, differentiable) and counts firing
over every rank (:func:`global_firing_rates`) before forming them. Every function here is
the identity (or a no-op) without an initialised process group of more than one rank, so
single-process code calls them unconditionally. The launcher that uses the rest lives in
:mod:`bae_lens.distributed`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange
from jaxtyping import Float
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_rows(x: Float[Tensor, "n ..."]) -> Float[Tensor, "n_global ..."]:
    """Concatenate ``x`` ``[n, ...]`` from every rank along dim 0, keeping gradients.

    Every rank must pass the same shape. Without a process group this returns ``x``.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def all_reduce_mean(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """Mean of ``x`` over ranks (no gradient); ``x`` itself without a process group."""
    if not is_distributed():
        return x.detach()
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()


@torch.no_grad()
def global_firing_rates(bits: Float[Tensor, "... n_bits"]) -> Float[Tensor, " n_bits"]:
    """Firing rate of each bit over the rows of every rank (shards may differ in size)."""
    bits = rearrange(bits, "... n_bits -> (...) n_bits").float()  # rows of this rank
    counts = torch.cat([bits.sum(dim=0), bits.new_tensor([bits.shape[0]])])
    if is_distributed():
        dist.all_reduce(counts)
    return counts[:-1] / counts[-1].clamp_min(1)


@torch.no_grad()
def average_gradients(module: torch.nn.Module) -> None:
    """Replace every parameter's gradient by its mean over ranks (one flat all_reduce)."""
    if not is_distributed():
        return
    # Parameters without a gradient keep none (Adam skips them, as in one process); the
    # graph is the same on every rank, so every rank skips the same ones.
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
        offset += n


@torch.no_grad()
def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


def shard_rows(
    batch: Float[Tensor, "n_global ..."], rank: int, world_size: int
) -> Float[Tensor, "n ..."]:
    """Rank ``rank``'s contiguous share of a global batch (concatenating the shards in
    rank order gives the batch back, which is what :func:`gather_rows` does)."""
    if batch.shape[0] % world_size != 0:
        raise ValueError(
            f"global batch of {batch.shape[0]} rows does not split evenly over "
            f"{world_size} ranks: make the batch size a multiple of the world size"
        )
    n = batch.shape[0] // world_size
    return batch[rank * n : (rank + 1) * n]
