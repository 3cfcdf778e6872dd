"""The process's runtime: one device, dtype and thread policy for every subcommand, and
the environment record kept with results.

- device: ``auto`` (CUDA if available, else MPS if available, else the CPU), ``cpu``,
  ``cuda``, ``cuda:N`` or ``mps`` (:func:`resolve_device`);
- dtype: ``float32`` (default), ``bfloat16`` or ``float16`` for the SAE and the model
  (:func:`resolve_dtype`); a BAE in half precision still takes its 0/1 decision on a
  float32 pre-activation (:meth:`bae_lens.bae._BinaryEncoding.hidden_pre`);
- threads: :func:`set_threads`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""``--dtype`` names (SAELens's ``dtype`` strings) and their torch dtypes."""
HALF_DTYPES = (torch.bfloat16, torch.float16)


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch CPU threads; the one thread policy of every subcommand.

    Default (``threads=None``, ``--threads`` not given): one thread on machines with
    <= 2 cores, torch's own choice (one per physical core) on larger ones. On small shared
    machines two OpenMP threads were 40-100x slower than one whenever another process was
    busy, so one thread is the safe default there. Returns the thread count in force.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1")
    if threads is None and (os.cpu_count() or 1) <= 2:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions and machine, recorded beside every benchmark and comparison result."""
    from importlib.metadata import version

    return {
        "python": sys.version.split()[0],
        **{p: version(p) for p in ("torch", "sae-lens", "transformer-lens", "bae-lens")},
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def resolve_device(name: str) -> str:
    """The torch device ``--device name`` means here: ``auto`` is ``cuda`` if CUDA is
    available, else ``mps`` if MPS is, else ``cpu``; any other name is checked by
    :func:`check_device`.

    >>> resolve_device("cpu")
    'cpu'
    """
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return check_device(name)


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype ``--dtype name`` means; ValueError listing the allowed names.

    >>> resolve_dtype("bfloat16")
    torch.bfloat16
    """
    if name not in DTYPES:
        raise ValueError(f"--dtype {name}: not a supported dtype ({', '.join(DTYPES)})")
    return DTYPES[name]


def check_device(name: str) -> str:
    """``name`` if torch can use it here; ValueError naming what is wrong otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name}: not a torch device ({DEVICE_CHOICES})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine (use cpu)")
    return name
