"""An LLM judge behind any OpenAI-compatible chat endpoint: concurrent, retrying, resumable.

- Endpoint, model and key come from :class:`JudgeConfig` (by default from the environment:
  ``BAE_LENS_JUDGE_BASE_URL``, ``BAE_LENS_JUDGE_MODEL``, and the key from
  ``BAE_LENS_JUDGE_API_KEY`` or ``OPENAI_API_KEY``). The key lives only in memory: it is
  never part of a config dump, a log line, the cache or a result.
- Requests run on ``concurrency`` threads; timeouts, connection errors, 429 and 5xx are
  retried with exponential backoff (and jitter, honouring ``Retry-After`` up to the cap).
  A request that still fails is returned as an error, never raised.
- Every finished request (an HTTP 200 with a chat answer, whatever its text) is appended to
  a JSONL cache, flushed and fsynced, keyed by sha256 of (model, messages, max_tokens,
  temperature). A rerun reads the cache first and sends only what is missing, so a killed
  run resumes and no answer is paid twice. A torn last line (killed mid-write) is ignored.
  Failed requests are not cached: a rerun tries them again.
- ``liveness`` (for a judge whose server this process started, such as the local llama.cpp
  judge) is called after every failed request; it raises when the server is gone, and
  that stops the run at once rather than retrying a dead port.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

ENV_BASE_URL = "BAE_LENS_JUDGE_BASE_URL"
ENV_MODEL = "BAE_LENS_JUDGE_MODEL"
ENV_API_KEY = "BAE_LENS_JUDGE_API_KEY"

Messages = list[dict[str, str]]


@dataclass
class JudgeConfig:
    """Where and how to ask. ``from_env`` fills what is not given."""

    base_url: str
    """OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1."""
    model: str
    """Model name sent with each request (part of the cache key)."""
    api_key: str = field(default="not-needed", repr=False)
    """Never serialised (see :meth:`public`)."""
    concurrency: int = 4
    """Requests in flight at once."""
    timeout: float = 60.0
    """Seconds per request before it counts as a timeout (and is retried)."""
    max_retries: int = 5
    """Retries after the first try, on timeouts, connection errors, 429 and 5xx."""
    backoff: float = 1.0
    """First retry waits ``backoff`` s, then doubles (with jitter) up to ``max_backoff``."""
    max_backoff: float = 30.0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError(f"base_url={self.base_url!r}: set it or ${ENV_BASE_URL}")
        if not self.model:
            raise ValueError(f"model={self.model!r}: set it or ${ENV_MODEL}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency={self.concurrency} must be >= 1")
        if self.timeout <= 0:
            raise ValueError(f"timeout={self.timeout} must be > 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")

    @classmethod
    def from_env(
        cls, base_url: str | None = None, model: str | None = None, **kwargs: Any
    ) -> JudgeConfig:
        """Arguments first, then ``$BAE_LENS_JUDGE_*`` (``$OPENAI_BASE_URL``, ``$OPENAI_API_KEY``)."""
        env = os.environ
        kwargs.setdefault(
            "api_key", env.get(ENV_API_KEY) or env.get("OPENAI_API_KEY") or "not-needed"
        )
        return cls(
            base_url=base_url or env.get(ENV_BASE_URL) or env.get("OPENAI_BASE_URL") or "",
            model=model or env.get(ENV_MODEL) or "",
            **kwargs,
        )

    def public(self) -> dict[str, Any]:
        """The settings that may be written to results (no key)."""
        return {k: v for k, v in self.__dict__.items() if k != "api_key"}


@dataclass
class Answer:
    """One finished (or failed) request."""

    key: str
    text: str | None
    """The answer's text; None when the request failed."""
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    cached: bool = False


def request_key(model: str, messages: Messages, max_tokens: int, temperature: float) -> str:
    """Cache key: sha256 of the model name, the messages and the decoding settings."""
    blob = json.dumps([model, messages, max_tokens, temperature], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of finished requests; each line is flushed and fsynced."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        self._answers[record["key"]] = record
                    except (json.JSONDecodeError, KeyError, TypeError):
                        logger.warning("skipping a torn or foreign line in %s", self.path)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._answers.get(key)

    def put(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._answers[record["key"]] = record
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _is_retryable(err: Exception) -> bool:
    import openai

    if isinstance(err, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


class Judge:
    """Sends chat requests to one endpoint; see the module docstring."""

    def __init__(
        self,
        config: JudgeConfig,
        cache_path: str | Path | None = None,
        liveness: Callable[[], None] | None = None,
    ) -> None:
        import openai

        self.config = config
        self.liveness = liveness
        self.cache = AnswerCache(cache_path)
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=config.timeout,
            max_retries=0,  # retried here, with our own backoff and accounting
        )
        self.sent = 0
        self._count_lock = threading.Lock()
        self.answered = 0
        """Requests answered, from the endpoint or the cache (0 with requests sent: nothing
        to score)."""

    def _send(self, key: str, messages: Messages, max_tokens: int) -> Answer:
        cfg = self.config
        started = time.perf_counter()
        for attempt in range(cfg.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=cfg.temperature,
                )
                choices = getattr(response, "choices", None)
                if not choices:
                    raise ValueError(f"response without choices: {str(response)[:200]!r}")
                text = choices[0].message.content or ""
            except Exception as err:  # noqa: BLE001  (any failure becomes a recorded error)
                error = f"{type(err).__name__}: {str(err)[:300]}"
                if self.liveness is not None:
                    self.liveness()  # raises when the server process has died
                if attempt < cfg.max_retries and _is_retryable(err):
                    wait = min(cfg.max_backoff, cfg.backoff * 2**attempt)
                    wait = min(cfg.max_backoff, max(wait, _retry_after(err) or 0.0))
                    logger.debug(
                        "retry %d of %s after %.2f s: %s", attempt + 1, key[:8], wait, error
                    )
                    time.sleep(wait * (0.5 + random.random() / 2))
                    continue
                logger.warning("request %s failed after %d tries: %s", key[:8], attempt + 1, error)
                return Answer(key, None, error, attempt + 1, time.perf_counter() - started)
            answer = Answer(key, text, None, attempt + 1, time.perf_counter() - started)
            with self._count_lock:
                self.answered += 1
            self.cache.put(
                {
                    "key": key,
                    "model": cfg.model,
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "text": text,
                    "attempts": answer.attempts,
                    "seconds": round(answer.seconds, 3),
                }
            )
            return answer
        raise AssertionError("unreachable")  # the loop always returns

    def ask(
        self, requests: Sequence[Messages], max_tokens: int, desc: str = "judge"
    ) -> list[Answer]:
        """Answers to ``requests`` in order: cached ones at once, the rest concurrently."""
        cfg = self.config
        keys = [request_key(cfg.model, m, max_tokens, cfg.temperature) for m in requests]
        answers: dict[str, Answer] = {}
        todo: dict[str, Messages] = {}
        for key, messages in zip(keys, requests, strict=True):
            record = self.cache.get(key)
            if record is not None:
                answers[key] = Answer(key, record["text"], None, 0, 0.0, cached=True)
                self.answered += 1
            else:
                todo.setdefault(key, messages)  # a prompt asked twice is sent once
        if todo:
            bar = tqdm(total=len(todo), desc=desc, disable=None)
            pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
            try:
                futures = [pool.submit(self._send, k, m, max_tokens) for k, m in todo.items()]
                for future in as_completed(futures):
                    answer = future.result()  # re-raises a dead server's error
                    answers[answer.key] = answer
                    self.sent += 1
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                bar.close()
        return [answers[k] for k in keys]
