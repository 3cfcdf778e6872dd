"""A disk cache of one hook's activations: float16, memory-mapped, built once, checked on reuse.

Many dictionaries trained on the same activations (a sparsity frontier, ablations) should
pay for the model's forward passes once. :func:`build_cache` runs the model to the hooked
block only (:func:`bae_lens.hidden_states.iter_hidden_states`), drops each sequence's BOS
position, and writes the remaining rows to ``activations.npy`` (float16, ``[n_rows,
d_in]``, opened with ``numpy.lib.format.open_memmap``) beside ``meta.json``, which
records what the rows are (:class:`CacheKey`: model, hook, dataset, split, context size,
row count, document seed) and how far the build got. A killed build resumes from its last flushed row; a finished cache opens in
any process without reading it into memory (:func:`open_cache`), and opening it with a
key that differs in any field is refused with the fields named.

float16 keeps a residual stream of SmolLM2 (norms of ~150, massive activations of ~24,000)
within range (max 65,504) at a relative rounding error of 2^-11, far below what any
dictionary here reconstructs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from bae_lens.hidden_states import check_hooks, iter_hidden_states

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
ROWS_FILE = "activations.npy"
LOCK_FILE = "build.lock"
META_FILE = "meta.json"
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class CacheKey:
    """What a cache holds; two caches are interchangeable only when every field matches."""

    model: str
    hook: str
    dataset: str
    """"embedded", a local path or a hub name."""
    split: str
    context_size: int
    n_rows: int
    """Activations kept (BOS positions are not kept)."""
    seed: int = 0
    """Seed of the document shuffle before tokenisation."""

    def mismatches(self, other: CacheKey) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: cache has {theirs[k]!r}, asked for {v!r}" for k, v in mine.items()
                if theirs[k] != v]  # fmt: skip


class ActivationCache:
    """A finished cache, memory-mapped; rows come out as float32 tensors."""

    def __init__(self, path: Path, key: CacheKey, rows: np.ndarray) -> None:
        self.path, self.key, self.rows = path, key, rows

    @property
    def n_rows(self) -> int:
        return int(self.rows.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.rows.shape[1])

    def take(self, index: np.ndarray) -> Float[Tensor, "n d_in"]:
        """Rows ``index`` (sorted first, so the memory map is read in order) as float32."""
        return torch.from_numpy(self.rows[np.sort(index)].astype(np.float32))

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Float[Tensor, "batch d_in"]]:
        """Endless minibatches: each epoch a fresh permutation (seeded by ``seed`` + epoch);
        an epoch's last partial batch is skipped."""
        if not 1 <= batch_size <= self.n_rows:
            raise ValueError(f"batch_size={batch_size} must be in [1, {self.n_rows}] (cached rows)")
        epoch = 0
        while True:
            order = np.random.default_rng(seed + epoch).permutation(self.n_rows)
            for start in range(0, self.n_rows - batch_size + 1, batch_size):
                yield self.take(order[start : start + batch_size])
            epoch += 1


def _read_meta(path: Path) -> dict[str, Any] | None:
    meta = path / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(meta)!r} is not a readable cache record: {err}") from err


def _write_meta(path: Path, record: dict[str, Any]) -> None:
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path / META_FILE)


def open_cache(path: str | Path, key: CacheKey) -> ActivationCache:
    """The finished cache at ``path`` holding ``key``'s rows; ValueError naming what differs,
    FileNotFoundError when there is none, and ValueError for an unfinished one."""
    path = Path(path)
    record = _read_meta(path)
    if record is None:
        raise FileNotFoundError(f"no activation cache at {str(path)!r} (no {META_FILE})")
    if record.get("format") != CACHE_FORMAT:
        raise ValueError(
            f"{str(path)!r}: cache format {record.get('format')!r}, expected {CACHE_FORMAT}"
        )
    stored = CacheKey(**record["key"])
    wrong = key.mismatches(stored)
    if wrong:
        raise ValueError(f"activation cache {str(path)!r} does not match: " + "; ".join(wrong))
    if record.get("rows_done") != stored.n_rows:
        raise ValueError(
            f"activation cache {str(path)!r} is unfinished ({record.get('rows_done')} of "
            f"{stored.n_rows} rows): build it again to resume"
        )
    rows = np.load(path / ROWS_FILE, mmap_mode="r")
    if rows.shape[0] != stored.n_rows or rows.dtype != np.float16:
        raise ValueError(
            f"{str(path / ROWS_FILE)!r}: shape {rows.shape} {rows.dtype} is not the cache's"
        )
    return ActivationCache(path, stored, rows)


def sequences_needed(n_rows: int, context_size: int) -> int:
    """Token sequences of ``context_size`` (BOS first, BOS not kept) to fill ``n_rows``."""
    return math.ceil(n_rows / (context_size - 1))


@torch.no_grad()
def build_cache(
    model: Any,
    tokens: Int[Tensor, "n_seq context_size"],
    key: CacheKey,
    path: str | Path,
    *,
    batch_size: int = 8,
    flush_every: int = 16,
    progress: bool = True,
) -> ActivationCache:
    """Write ``key.n_rows`` activations at ``key.hook`` for ``tokens`` (every sequence
    starting with BOS, whose row is dropped) to ``path``; resumes a build of the same key;
    refuses a folder holding another key. Returns the opened cache.

    One process builds at a time: a second one waits on the folder's lock, then finds the
    cache finished and opens it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_locked(model, tokens, key, path, batch_size, flush_every, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_locked(
    model: Any,
    tokens: Int[Tensor, "n_seq context_size"],
    key: CacheKey,
    path: Path,
    batch_size: int,
    flush_every: int,
    progress: bool,
) -> ActivationCache:
    check_hooks(model, [key.hook])
    if tokens.shape[1] != key.context_size:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)}: context_size is {key.context_size}"
        )
    n_seq = sequences_needed(key.n_rows, key.context_size)
    if tokens.shape[0] < n_seq:
        raise ValueError(
            f"{tokens.shape[0]} sequences hold fewer than n_rows={key.n_rows} rows "
            f"({key.context_size - 1} per sequence)"
        )
    record = _read_meta(path)
    if record is not None:
        wrong = key.mismatches(CacheKey(**record["key"]))
        if wrong:
            raise ValueError(f"{str(path)!r} holds another cache: " + "; ".join(wrong))
        if record["rows_done"] == key.n_rows:
            return open_cache(path, key)
    done = int(record["rows_done"]) if record else 0
    rows: Any = np.load(path / ROWS_FILE, mmap_mode="r+") if done else None
    per_seq = key.context_size - 1
    first = done // per_seq  # a resumed build starts at the sequence holding row `done`
    bar = tqdm(total=key.n_rows, initial=done, unit="tok", unit_scale=True, desc="cache",
               disable=not progress)  # fmt: skip
    batches = iter_hidden_states(model, tokens[first:n_seq], [key.hook], batch_size=batch_size)
    for batch_index, batch in enumerate(batches, start=1):
        seq = first + batch.start
        states = batch.states[key.hook]
        acts = states[:, 1:].reshape(-1, states.shape[-1])  # [b*(ctx-1), d]: BOS not kept
        acts = acts[done - seq * per_seq : key.n_rows - seq * per_seq]
        d_in = acts.shape[-1]
        if rows is None:
            rows = np.lib.format.open_memmap(
                path / ROWS_FILE, mode="w+", dtype=np.float16, shape=(key.n_rows, d_in)
            )
            _write_meta(path, {"format": CACHE_FORMAT, "key": asdict(key), "rows_done": 0,
                               "d_in": d_in})  # fmt: skip
        clipped = acts.float().clamp(-FLOAT16_MAX, FLOAT16_MAX)
        rows[done : done + acts.shape[0]] = clipped.cpu().numpy().astype(np.float16)
        done += acts.shape[0]
        bar.update(acts.shape[0])
        if batch_index % flush_every == 0 or done == key.n_rows:
            rows.flush()
            _write_meta(path, {"format": CACHE_FORMAT, "key": asdict(key), "rows_done": done,
                               "d_in": d_in})  # fmt: skip
    bar.close()
    return open_cache(path, key)
