"""The process's runtime: torch CPU threads, and the environment record kept with results."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch CPU threads; by default one on machines with <= 2 cores.

    On small shared machines two OpenMP threads were 40-100x slower than one whenever
    another process was busy, so one thread is the safe default there; on larger machines
    torch's own choice stands. Returns the thread count in force.
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


def check_device(name: str) -> str:
    """``name`` if torch can use it here; ValueError naming what is wrong otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {name}: not a torch device (cpu, cuda, cuda:N, mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine (use cpu)")
    return name
