"""Checkpoints that a run killed at any step (SIGKILL included) resumes from exactly.

SAELens's own checkpointing (``n_checkpoints``, ``checkpoint_path``,
``resume_from_checkpoint``) saves and restores the SAE's weights, the optimizer, the
learning-rate and coefficient schedulers, the activation scaler, the feature-sparsity
counters and the dataset position. Resuming with it alone does not continue the same
run, because it lacks:

- the activation mixing buffer: SAELens's buffer is a generator (not saveable), so a
  resumed run loses the rows read ahead into it and draws a different shuffle;
- the random state (torch, CUDA, Python, numpy): e.g. ``covariance_penalty=
  "frobenius_probe"`` draws its probes from torch's RNG;
- the step counter: the trainer saves ``n_training_steps`` before incrementing it, so a
  resumed run repeats the last step's number (it shifts ``entropy_start_step`` and the
  BAE's log by one);
- the BAE's ``training_log`` and ``_needs_data_init``.

:class:`ResumableRunner` adds these. It replaces the store's buffer by
:class:`ResumableMixingBuffer` (SAELens's mixing algorithm with its own seeded
generator and a state dict), writes ``bae_resume_state.safetensors`` and, last, the
marker ``bae_resume_state.json`` into each checkpoint (so a checkpoint interrupted while
being written is never picked), and restores all of it on resume. The resumed run then
matches the uninterrupted one step for step for pre-tokenized datasets (the dataset
position is SAELens's row count: with text datasets the tokens of a half-used document
are skipped). Loading: SAELens reads ``trainer_state.pt`` with a plain ``torch.load``
(weights-only by default only from torch 2.6); :func:`check_checkpoint` first loads it
with ``weights_only=True`` so a checkpoint whose pickle would run code is refused on any
torch. Everything this module writes is safetensors or JSON.

:func:`train_sae_resumable` is :func:`bae_lens.train.train_sae` with checkpoints every
``total / (n_checkpoints + 1)`` samples that resumes from the latest complete checkpoint
under ``checkpoint_dir`` when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import LanguageModelSAETrainingRunner
from sae_lens.constants import SAE_WEIGHTS_FILENAME, TRAINER_STATE_FILENAME
from sae_lens.training.activations_store import ActivationsStore
from safetensors.torch import load_file, save_file
from torch import Tensor

logger = logging.getLogger(__name__)

RESUME_STATE_FILENAME = "bae_resume_state.safetensors"
RESUME_MARKER_FILENAME = "bae_resume_state.json"
"""Written last: a checkpoint directory without it is incomplete and never resumed."""


class ResumableMixingBuffer:
    """SAELens's ``mixing_buffer`` as an iterator with a state dict.

    Same algorithm: fill a buffer of ``buffer_size`` rows from the store, shuffle it,
    serve all but ``mix_fraction * buffer_size`` rows as batches, keep the rest. The
    shuffle uses a private ``torch.Generator`` seeded with ``seed``, not the global RNG.
    """

    def __init__(self, store: ActivationsStore, seed: int):
        self.store = store
        self.buffer_size = store.n_batches_in_buffer * store.training_context_size
        self.batch_size = store.train_batch_size_tokens
        self.mix_fraction = store.activations_mixing_fraction
        if self.buffer_size < self.batch_size:
            raise ValueError(
                f"buffer of {self.buffer_size} rows is smaller than a batch of "
                f"{self.batch_size}: raise n_batches_in_buffer"
            )
        self.generator = torch.Generator().manual_seed(seed)
        self._loader: Iterator[Tensor] | None = None
        self._storage: Tensor | None = None
        self._serving: Tensor | None = None  # rows not yet served, a multiple of batch_size

    def __iter__(self) -> ResumableMixingBuffer:
        return self

    def __next__(self) -> Tensor:
        while self._serving is None or self._serving.shape[0] == 0:
            self._refill()
        assert self._serving is not None
        batch = self._serving[: self.batch_size]
        self._serving = self._serving[self.batch_size :]
        return batch

    def _refill(self) -> None:
        if self._loader is None:
            self._loader = self.store._iterate_filtered_activations()
        storage = self._storage
        while storage is None or storage.shape[0] < self.buffer_size:
            new = next(self._loader)
            storage = new if storage is None else torch.cat([storage, new], dim=0)
        if self.mix_fraction > 0:
            order = torch.randperm(storage.shape[0], generator=self.generator)
            storage = storage[order.to(storage.device)]
        keep = int(self.buffer_size * self.mix_fraction)
        n_batches = max(1, (storage.shape[0] - keep) // self.batch_size)
        cut = n_batches * self.batch_size
        self._serving, self._storage = storage[:cut], storage[cut:]

    def state_dict(self) -> dict[str, Tensor]:
        d_in = self.store.d_in
        empty = torch.zeros(0, d_in)
        return {
            "buffer_storage": (self._storage if self._storage is not None else empty).cpu(),
            "buffer_serving": (self._serving if self._serving is not None else empty).cpu(),
            "buffer_generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.store.device
        self._storage = state["buffer_storage"].to(device)
        self._serving = state["buffer_serving"].to(device)
        if self._storage.shape[0] == 0 and self._serving.shape[0] == 0:
            self._storage = self._serving = None
        self.generator.set_state(state["buffer_generator"])
        self._loader = None  # a fresh reader continues from the restored dataset position


def _activations_store(store: Any) -> ActivationsStore:
    """The ActivationsStore under wrappers such as bae_lens.train.OutlierFilter."""
    while not isinstance(store, ActivationsStore):
        if not hasattr(store, "store"):
            raise ValueError(f"{type(store).__name__} wraps no ActivationsStore")
        store = store.store
    return store


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng_torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng_cuda_{i}"] = state
    py_version, py_state, py_gauss = random.getstate()
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    info = {
        "python_random": [py_version, list(py_state), py_gauss],
        "numpy_random": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, info


def _set_rng_state(tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng_torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, state, gauss = info["python_random"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = info["numpy_random"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """The resume marker of checkpoint ``path``, after checking the checkpoint is complete
    and that ``trainer_state.pt`` loads with ``torch.load(weights_only=True)``."""
    path = Path(path)
    marker = path / RESUME_MARKER_FILENAME
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    for name in (SAE_WEIGHTS_FILENAME, TRAINER_STATE_FILENAME, RESUME_MARKER_FILENAME):
        if not (path / name).is_file():
            raise ValueError(
                f"checkpoint {str(path)!r} is incomplete: no {name} (not written by "
                "bae_lens.resume, or interrupted while saving)"
            )
    try:
        torch.load(path / TRAINER_STATE_FILENAME, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{str(path / TRAINER_STATE_FILENAME)!r} does not load with weights_only=True "
            f"({type(err).__name__}); refusing to resume from it"
        ) from None
    return json.loads(marker.read_text())


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the most training steps under ``checkpoint_dir``
    (searched recursively: SAELens adds a random run id to the path), or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for marker in root.rglob(RESUME_MARKER_FILENAME):
        try:
            steps = int(json.loads(marker.read_text())["n_training_steps"])
        except (ValueError, KeyError, json.JSONDecodeError):
            continue
        if best is None or steps > best[0]:
            best = (steps, marker.parent)
    return None if best is None else best[1]


class ResumableRunner(LanguageModelSAETrainingRunner):
    """SAELens's runner with exact resume (see the module docstring)."""

    def __init__(self, cfg: Any, *args: Any, **kwargs: Any):
        if cfg.prefetch_llm_batches:
            raise ValueError(
                "prefetch_llm_batches must be False for resumable training: prefetched "
                "batches would be lost at a checkpoint"
            )
        super().__init__(cfg, *args, **kwargs)
        store = _activations_store(self.activations_store)
        self.mixing_buffer = ResumableMixingBuffer(store, seed=cfg.seed)
        store._dataloader = self.mixing_buffer  # the store's __next__ reads from it
        self._trainer: Any = None

    def run(self) -> Any:
        if self.cfg.resume_from_checkpoint is not None:
            check_checkpoint(self.cfg.resume_from_checkpoint)
        return super().run()

    def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
        self._trainer = trainer
        if self.cfg.resume_from_checkpoint is not None:
            self._restore(Path(self.cfg.resume_from_checkpoint), trainer)
        return super().run_trainer_with_interruption_handling(trainer)

    def save_checkpoint(self, checkpoint_path: Path | None) -> None:
        super().save_checkpoint(checkpoint_path)
        # The interruption handler calls this without the trainer state: not resumable.
        if checkpoint_path is None or not (checkpoint_path / TRAINER_STATE_FILENAME).exists():
            return
        trainer, sae = self._trainer, self.sae
        tensors, info = _rng_state()
        tensors.update(self.mixing_buffer.state_dict())
        save_file(tensors, str(checkpoint_path / RESUME_STATE_FILENAME))
        info |= {
            # scheduler.step() runs once per completed step; n_training_steps lags by one
            "n_training_steps": int(trainer.lr_scheduler.last_epoch),
            "training_log": getattr(sae, "training_log", None),
            "needs_data_init": bool(getattr(sae, "_needs_data_init", False)),
        }
        tmp = checkpoint_path / (RESUME_MARKER_FILENAME + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, checkpoint_path / RESUME_MARKER_FILENAME)  # atomic: marker last

    def _restore(self, path: Path, trainer: Any) -> None:
        info = json.loads((path / RESUME_MARKER_FILENAME).read_text())
        tensors = load_file(str(path / RESUME_STATE_FILENAME))
        trainer.n_training_steps = info["n_training_steps"]
        # thresholds already passed would each trigger a checkpoint on the next steps
        trainer.checkpoint_thresholds = [
            t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples
        ]
        self.mixing_buffer.load_state_dict(tensors)
        if info.get("training_log") is not None and hasattr(self.sae, "training_log"):
            self.sae.training_log = info["training_log"]
        if hasattr(self.sae, "_needs_data_init"):
            self.sae._needs_data_init = info["needs_data_init"]
        _set_rng_state(tensors, info)


def train_sae_resumable(
    model: Any,
    dataset: Any,
    sae_cfg: Any,
    hook_name: str,
    output_dir: str | Path,
    *,
    checkpoint_dir: str | Path,
    n_checkpoints: int = 10,
    resume: bool = True,
    **train_kwargs: Any,
) -> Any:
    """:func:`bae_lens.train.train_sae` with resumable checkpoints under ``checkpoint_dir``.

    With ``resume`` and a complete checkpoint under ``checkpoint_dir``, training continues
    from the latest one; call again with the same arguments after a crash or a kill. The
    resume is exact for a pre-tokenized dataset (``input_ids``); with a text dataset it
    skips the rest of the document read at the checkpoint, and says so in a warning.
    """
    from bae_lens.train import train_sae

    if n_checkpoints < 1:
        raise ValueError(f"n_checkpoints={n_checkpoints} must be >= 1")
    start = latest_checkpoint(checkpoint_dir) if resume else None
    if start is not None and "input_ids" not in getattr(dataset, "column_names", []):
        logger.warning(
            "resuming from %s on a text dataset: not exact. SAELens counts the dataset "
            "position in documents, so the tokens left in the document that was half-read "
            "at the checkpoint are skipped and the run differs from an uninterrupted one "
            "(final weights by up to ~0.01 in a test). Pre-tokenize the dataset (an "
            "input_ids column) for an exact resume.",
            start,
        )
    return train_sae(
        model,
        dataset,
        sae_cfg,
        hook_name,
        output_dir,
        runner_cls=ResumableRunner,
        checkpoint_path=str(checkpoint_dir),
        n_checkpoints=n_checkpoints,
        resume_from_checkpoint=None if start is None else str(start),
        **train_kwargs,
    )
