"""Train a BAE (or any SAELens SAE) through SAELens's own runner and ActivationsStore.

:func:`train_sae` fills a ``LanguageModelSAERunnerConfig`` with settings that work for
minibatch statistics, passes the model and dataset through the runner's
``override_model`` / ``override_dataset`` (a dataset given as a path string would be
looked up on the hub), runs ``LanguageModelSAETrainingRunner`` and saves the result in
SAELens's format (``cfg.json`` + ``sae_weights.safetensors`` + ``runner_cfg.json``),
plus ``training_log.jsonl`` with the losses and code statistics SAELens records only
to wandb.

Massive activations: beside BOS (which ``exclude_special_tokens`` drops), residual
streams carry rare tokens with norms 100x the median (SmolLM2: the first token after
BOS, norm ~24,000 against a median of 150). One such token outweighs a whole minibatch
of squared error, so by default rows with norm above ``outlier_norm_factor`` times the
minibatch median are dropped before the SAE sees them (SAELens has no such filter).

The activation-norm estimate (``normalize_activations="expected_average_only_in"``) reads
``n_batches_for_norm_estimate`` batches before training. SAELens then throws them away, so
their forward passes are paid twice over; here they are handed to training afterwards
(see :class:`OutlierFilter`), which saves those forward passes and trains on the same
number of tokens.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
from sae_lens.saes.sae import TrainingSAE, TrainingSAEConfig
from tqdm.auto import tqdm

from bae_lens.hidden_states import check_hooks, typical_rows
from bae_lens.model_cache import reloadable_model_name
from bae_lens.stages import StageClock

logger = logging.getLogger(__name__)

TRAINING_LOG_FILENAME = "training_log.jsonl"


class OutlierFilter:
    """Wraps an activation iterator; drops rows whose norm exceeds ``factor`` x the median.

    ``factor=None`` keeps every row. ``replay_first=k`` records the first ``k`` batches
    (the ones the norm estimate reads) and serves them once more afterwards, so training
    gets them too instead of their forward passes being wasted. ``progress`` (a tqdm bar)
    advances by the rows served after that. Everything else (checkpointing, attributes)
    passes through to the wrapped store.
    """

    def __init__(
        self,
        store: Any,
        factor: float | None,
        replay_first: int = 0,
        progress: Any = None,
    ):
        if factor is not None and factor <= 1:
            raise ValueError(f"outlier_norm_factor={factor} must be > 1")
        self.store = store
        self.factor = factor
        self.n_dropped = 0
        self.n_seen = 0
        self.n_non_finite = 0
        self.n_skipped_batches = 0
        self._to_record = replay_first
        self._recorded: list[Any] = []
        self._replay: deque[Any] = deque()
        self.progress = progress

    @property
    def recording(self) -> bool:
        """Whether the batches now drawn are the ones the norm estimate reads."""
        return self._to_record > 0

    def __iter__(self) -> OutlierFilter:
        return self

    def _fresh(self) -> Any:
        """The next batch with non-finite rows (and, with a factor, massive rows) dropped;
        a batch left with fewer than 2 rows is skipped with a warning."""
        while True:
            batch = next(self.store)
            self.n_seen += int(batch.shape[0])
            rows = batch.flatten(1)  # [batch, d_in]
            finite = torch.isfinite(rows).all(dim=-1)
            keep = typical_rows(rows, self.factor)  # the one outlier rule
            if not bool(finite.all()):
                self.n_non_finite += int((~finite).sum())
                logger.warning("dropped %d rows with NaN or inf", int((~finite).sum()))
            self.n_dropped += int((finite & ~keep).sum())
            batch = batch[keep]
            if batch.shape[0] >= 2:
                return batch
            self.n_skipped_batches += 1
            logger.warning("skipped a minibatch left with %d row(s)", int(batch.shape[0]))

    def __next__(self) -> Any:
        if self._replay:
            batch = self._replay.popleft()
        else:
            batch = self._fresh()
            if self._to_record:
                self._recorded.append(batch)
                self._to_record -= 1
                if not self._to_record:
                    self._replay.extend(self._recorded)
                    self._recorded = []
                return batch
        if self.progress is not None:
            self.progress.update(int(batch.shape[0]))
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def buffer_batches(
    train_batch_size_tokens: int, context_size: int, store_batch_size_prompts: int, cover: int = 8
) -> int:
    """``n_batches_in_buffer`` so the shuffling buffer holds ``cover`` training batches.

    Entropy and covariance are minibatch statistics: a minibatch drawn from a buffer that
    spans many documents is not dominated by a few of them.
    """
    tokens_per_store_batch = context_size * store_batch_size_prompts
    return max(2, math.ceil(cover * train_batch_size_tokens / tokens_per_store_batch))


def train_sae(
    model: Any,
    dataset: Any,
    sae_cfg: TrainingSAEConfig,
    hook_name: str,
    output_dir: str | Path,
    *,
    model_name: str = "custom",
    training_tokens: int = 200_000,
    train_batch_size_tokens: int = 1024,
    context_size: int = 128,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 42,
    store_batch_size_prompts: int = 8,
    outlier_norm_factor: float | None = 10.0,
    runner_cls: type[LanguageModelSAETrainingRunner] = LanguageModelSAETrainingRunner,
    clock: StageClock | None = None,
    **runner_overrides: Any,
) -> TrainingSAE[Any]:
    """Train ``sae_cfg``'s architecture on ``model``'s activations at ``hook_name``.

    ``dataset`` is a ``datasets.Dataset`` with a ``"text"`` column (tokenised on the fly)
    or an ``"input_ids"`` column (pass ``is_dataset_tokenized=True``). Extra keyword
    arguments go to ``LanguageModelSAERunnerConfig``. ``outlier_norm_factor=None`` keeps
    every activation (see the module docstring). ``runner_cls`` swaps in a subclass of
    SAELens's runner (bae_lens.resume uses one). ``clock`` receives the wall time of
    tokenisation, activation generation, the norm estimate and the SAE steps.
    """
    check_hooks(model, [hook_name])
    check_hook_width(model, hook_name, sae_cfg.d_in, "hook_head_index" in runner_overrides)
    if training_tokens < train_batch_size_tokens:
        raise ValueError(
            f"training_tokens={training_tokens} is smaller than one batch "
            f"(train_batch_size_tokens={train_batch_size_tokens})"
        )
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    output_dir = Path(output_dir)
    settings = runner_settings(
        sae_cfg, hook_name, output_dir, model_name=model_name, training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens, context_size=context_size, lr=lr,
        device=device, seed=seed, store_batch_size_prompts=store_batch_size_prompts,
        is_dataset_tokenized="input_ids" in dataset.column_names,
    )  # fmt: skip
    # recorded in the saved metadata, so the model can be reloaded as it was run
    prepend_bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    settings["model_from_pretrained_kwargs"] = {"default_prepend_bos": prepend_bos}
    cfg = LanguageModelSAERunnerConfig(**(settings | runner_overrides))
    runner = runner_cls(cfg, override_dataset=dataset, override_model=model)
    estimates_norm = (
        sae_cfg.normalize_activations == "expected_average_only_in"
        and cfg.resume_from_checkpoint is None
        and not cfg.prefetch_llm_batches
    )
    progress = tqdm(
        total=cfg.training_tokens, unit="tok", unit_scale=True, desc="train (tokens)", position=1
    )
    store = OutlierFilter(
        runner.activations_store,
        outlier_norm_factor,
        replay_first=cfg.n_batches_for_norm_estimate if estimates_norm else 0,
        progress=progress,
    )
    runner.activations_store = store
    clock = clock if clock is not None else StageClock()
    _time_store(store, clock)
    started = time.perf_counter()
    try:
        sae = runner.run()
    finally:
        progress.close()
    inner = sum(clock.seconds(name) for name in _STORE_STAGES)
    clock.add("SAE steps", time.perf_counter() - started - inner, cfg.training_tokens)
    if outlier_norm_factor is not None:
        logger.info("dropped %d of %d outlier activations", store.n_dropped, store.n_seen)
    write_training_log(sae, output_dir)
    return sae


_STORE_STAGES = ("tokenisation", "activation generation", "norm estimate")


def check_hook_width(model: Any, hook_name: str, d_in: int, one_head: bool = False) -> None:
    """The activation at ``hook_name`` is ``d_in`` wide per token (``d_mlp`` for
    ``mlp.hook_post``, not ``d_model``), read from a meta-device forward of the model's
    config (:func:`bae_lens.models.hook_width`); skipped for a model without a
    TransformerLens config, and for one head of an attention hook (``hook_head_index``)."""
    from transformer_lens import HookedTransformerConfig

    from bae_lens.models import hook_width

    cfg = getattr(model, "cfg", None)
    if one_head or not isinstance(cfg, HookedTransformerConfig):
        return
    width = hook_width(cfg, hook_name)
    if width != d_in:
        raise ValueError(
            f"hook_name={hook_name!r} carries {width} values per token but the SAE has "
            f"d_in={d_in}; size it from the hook (bae_lens.models.hook_width), not d_model"
        )


WANDB_PROJECT = "bae-lens"


def wandb_logging(
    project: str = WANDB_PROJECT,
    entity: str | None = None,
    run_name: str | None = None,
    log_frequency: int = 10,
) -> LoggingConfig:
    """SAELens's ``LoggingConfig`` with wandb on; pass it as ``train_sae(..., logger=...)``.

    SAELens's trainer then logs, every ``log_frequency`` steps, its losses
    (``losses/mse_loss``, ``losses/entropy_loss``, ...), ``metrics/l0``,
    ``metrics/explained_variance`` and the metrics the SAE returns: a BAE's code statistics
    arrive as ``metrics/bae/...`` (firing rate, dead and dense bits, entropy). The key is
    wandb's own business (``wandb login`` or ``WANDB_API_KEY``): nothing here reads it, and
    ``WANDB_MODE=offline`` keeps the run on disk.
    """
    return LoggingConfig(
        log_to_wandb=True,
        wandb_project=project,
        wandb_entity=entity,
        run_name=run_name,
        wandb_log_frequency=log_frequency,
    )


def runner_settings(
    sae_cfg: TrainingSAEConfig,
    hook_name: str,
    output_dir: Path,
    *,
    model_name: str,
    training_tokens: int,
    train_batch_size_tokens: int,
    context_size: int,
    lr: float,
    device: str,
    seed: int,
    store_batch_size_prompts: int,
    is_dataset_tokenized: bool,
) -> dict[str, Any]:
    """``LanguageModelSAERunnerConfig`` fields for :func:`train_sae`: the shuffling buffer
    covers 8 minibatches, special tokens are dropped, wandb is off (pass
    ``logger=wandb_logging(...)`` to train_sae to turn it on), SAELens saves to
    ``output_dir`` and nowhere else."""
    return {
        "sae": sae_cfg,
        "model_name": reloadable_model_name(model_name),
        "hook_name": hook_name,
        "dataset_path": "",
        "is_dataset_tokenized": is_dataset_tokenized,
        "streaming": False,
        "context_size": context_size,
        "training_tokens": training_tokens,
        "train_batch_size_tokens": train_batch_size_tokens,
        "store_batch_size_prompts": store_batch_size_prompts,
        "n_batches_in_buffer": buffer_batches(
            train_batch_size_tokens, context_size, store_batch_size_prompts
        ),
        "lr": lr,
        "device": device,
        "seed": seed,
        "prepend_bos": True,
        "exclude_special_tokens": True,
        "logger": LoggingConfig(log_to_wandb=False),
        "output_path": str(output_dir),
        "checkpoint_path": None,
        "n_batches_for_norm_estimate": 20,
        "verbose": False,
        "model_from_pretrained_kwargs": {},
    }


def _time_store(store: OutlierFilter, clock: StageClock) -> None:
    """Time the ActivationsStore's token fetching and model forward passes.

    Forward passes made while the norm estimate reads its batches are booked to the norm
    estimate (the batches then go to training too, see :class:`OutlierFilter`).
    """
    inner = store.store

    def forward_stage() -> str:
        return "norm estimate" if store.recording else "activation generation"

    inner.get_batch_tokens = clock.wrap("tokenisation", inner.get_batch_tokens, _numel)
    inner.get_activations = clock.wrap(forward_stage, inner.get_activations, _n_tokens)


def _numel(tokens: Any) -> int:
    return int(tokens.numel())


def _n_tokens(activations: Any) -> int:
    return int(activations.shape[0] * activations.shape[1])  # [batch, pos, d_in]


def write_training_log(sae: TrainingSAE[Any], output_dir: Path) -> Path | None:
    """Write ``sae.training_log`` (a BAE records one) as JSON lines; None if there is none."""
    records = getattr(sae, "training_log", None)
    if not records:
        return None
    path = output_dir / TRAINING_LOG_FILENAME
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path
