"""Start and stop a local OpenAI-compatible judge: llama.cpp's server on loopback.

``llama-cpp-python[server]`` serves a GGUF file at ``http://127.0.0.1:PORT/v1``. With the
embedded SmolLM2-135M-Instruct GGUF this gives a judge that needs no network; its answers are
weak (a 135M model), so it proves the pipeline, not the science::

    with LocalJudgeServer() as server:            # the embedded GGUF by default
        config = JudgeConfig(base_url=server.base_url, model=server.model)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
INSTALL_HINT = (
    "python -m bae_lens.comsem.install (or bash scripts/setup.sh --with-local-judge), "
    "which builds llama-cpp-python[server]==0.3.36 portably"
)


class JudgeServerDied(RuntimeError):
    """The local judge's server process exited while ComSem was using it."""


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal 11 (SIGSEGV)`` for a Popen return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp.server`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp.server") is not None
    except ModuleNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class LocalJudgeServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 (never another interface).

    Args:
        gguf: model file; default the embedded SmolLM2 GGUF (:func:`bae_lens.model_cache.embedded_gguf_path`).
        port: default a free port.
        n_threads: llama.cpp threads (1 suits a shared 2-core machine).
        n_ctx: context length in tokens.
        startup_timeout: seconds to wait for ``/v1/models`` to answer.
    """

    def __init__(
        self,
        gguf: str | Path | None = None,
        port: int | None = None,
        n_threads: int = 1,
        n_ctx: int = 2048,
        startup_timeout: float = 120.0,
    ) -> None:
        if gguf is None:
            from bae_lens.model_cache import embedded_gguf_path

            gguf = embedded_gguf_path()
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise FileNotFoundError(f"GGUF file {str(self.gguf)!r} does not exist")
        self.port = port or free_port()
        self.n_threads, self.n_ctx, self.startup_timeout = n_threads, n_ctx, startup_timeout
        self.model = self.gguf.stem
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (lives from start to stop)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        if not llama_cpp_available():
            raise ModuleNotFoundError(f"llama_cpp.server is not installed: {INSTALL_HINT}")
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf),
            "--model_alias", self.model,
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip

    def start(self) -> LocalJudgeServer:
        self._process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise JudgeServerDied(
                    f"llama_cpp.server exited at start-up with "
                    f"{describe_exit(self._process.returncode)}; its log ends:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    json.load(r)
                logger.info("llama.cpp judge %s at %s", self.model, self.base_url)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"llama_cpp.server not ready after {self.startup_timeout} s")

    def check_alive(self, grace: float = 1.0) -> None:
        """Raise :class:`JudgeServerDied` (exit and log tail) if the server has exited.

        The judge calls this when a request fails, so a crashed server stops ComSem at once
        instead of being retried with backoff. ``grace`` seconds let a process that is
        dying (the connection dropped first) finish exiting.
        """
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return  # still running: the failure was something else
        raise JudgeServerDied(
            f"the local judge (llama_cpp.server, {self.gguf.name}) died with "
            f"{describe_exit(process.returncode)}; its log ends:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalJudgeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
