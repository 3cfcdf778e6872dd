"""Data-parallel support: minibatch statistics over the GLOBAL batch.

The entropy and dependence penalties are statistics of the whole minibatch
(../shared/BAE_METHOD.md section 2). Under data parallelism each rank holds a shard, so
the code is gathered from every rank before the penalties are formed.
``torch.distributed.nn.functional.all_gather`` is differentiable: its backward sums, on
each rank, the gradients that every rank's (identical) penalty sends to that rank's rows,
so after the usual averaging of parameter gradients across ranks the penalty's gradient
equals that of the single-process penalty on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``[n, ...]`` from every rank along dim 0, keeping gradients.

    Every rank must pass the same shape. Without a process group this returns ``x``.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)
