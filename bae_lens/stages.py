"""Where a job's time goes: named stages with wall seconds and the tokens each handled.

A :class:`StageClock` is filled two ways: ``with clock.stage("plot"):`` around a block, or
``clock.wrap(name, fn)`` around a function that another library calls for us (SAELens's
ActivationsStore fetches tokens and runs the model inside its own loop). Time spent in
nested stages is not subtracted from the outer one; :meth:`StageClock.add` records a
remainder computed by the caller. The clock is plain data: :meth:`as_dict` goes to JSON,
:meth:`summary_line` to the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Stage:
    seconds: float = 0.0
    tokens: int = 0
    calls: int = 0

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.tokens and self.seconds > 0 else None


class StageClock:
    """Accumulates wall time (and tokens) per named stage, in first-seen order."""

    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}

    def add(self, name: str, seconds: float, tokens: int = 0) -> None:
        stage = self.stages.setdefault(name, Stage())
        stage.seconds += seconds
        stage.tokens += tokens
        stage.calls += 1

    @contextmanager
    def stage(self, name: str, tokens: int = 0) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, tokens)

    def wrap(
        self,
        name: str | Callable[[], str],
        fn: F,
        tokens_of: Callable[[Any], int] | None = None,
    ) -> F:
        """``fn`` timed under ``name`` (or the stage ``name()`` names at each call);
        ``tokens_of(result)`` counts the tokens it handled."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            stage = name if isinstance(name, str) else name()
            started = time.perf_counter()
            result = fn(*args, **kwargs)
            tokens = tokens_of(result) if tokens_of is not None else 0
            self.add(stage, time.perf_counter() - started, tokens)
            return result

        return timed  # type: ignore[return-value]

    def seconds(self, name: str) -> float:
        return self.stages[name].seconds if name in self.stages else 0.0

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, stage in self.stages.items():
            row: dict[str, Any] = asdict(stage) | {"seconds": round(stage.seconds, 3)}
            rate = stage.tokens_per_second
            row["tokens_per_second"] = None if rate is None else round(rate, 1)
            out[name] = row
        return out

    def summary_line(self, total: float | None = None) -> str:
        """``time: load 1.4 s, activations 430 s (700 tok/s), ... of 520 s``."""
        parts = []
        for name, stage in self.stages.items():
            rate = stage.tokens_per_second
            parts.append(
                f"{name} {stage.seconds:.1f} s" + (f" ({rate:,.0f} tok/s)" if rate else "")
            )
        tail = f" of {total:.1f} s wall" if total is not None else ""
        return "time: " + ", ".join(parts) + tail
