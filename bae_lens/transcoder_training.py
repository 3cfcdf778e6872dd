"""Train a transcoder (:mod:`bae_lens.transcoders`) with SAELens's trainer on token-aligned
pairs (x, y) from two hooks.

The pairs come either live from ``ActivationsStore.from_config_multi_hook`` (one LM
forward pass feeds both hooks) or from a cached-activations folder holding both hook
columns (:mod:`bae_lens.baselines` writes one). Either way SAELens's
``multi_hook_concat_split_iter`` shuffles them with a single permutation, and the trainer
receives ``[x, y]`` concatenated on the last axis. Activations are not normalised: one
scale estimated on the concatenated pair would mix the two hooks' norms.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from einops import rearrange
from jaxtyping import Int
from sae_lens import LoggingConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.transcoder import Transcoder
from sae_lens.training.activations_store import ActivationsStore
from sae_lens.training.mixing_buffer import multi_hook_concat_split_iter
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor

from bae_lens.hidden_states import check_hooks
from bae_lens.transcoders import TranscoderTraining, TranscoderTrainingConfig

logger = logging.getLogger(__name__)


def cached_pair_batches(
    path: str | Path,
    hook_names: list[str],
    rows_per_read: int = 8,
    exclude_tokens: Tensor | None = None,
    device: str = "cpu",
) -> Iterator[dict[str, Tensor]]:
    """Endless ``{hook: [tokens, d_hook]}`` reads from a cached-activations folder holding a
    column per hook (and ``token_ids``); tokens in ``exclude_tokens`` are dropped."""
    data = datasets.load_from_disk(str(path))
    missing = [h for h in hook_names if h not in data.column_names]
    if missing:
        raise ValueError(f"cached activations at {path} lack hooks {missing}: {data.column_names}")
    columns = hook_names + (["token_ids"] if "token_ids" in data.column_names else [])
    data.set_format(type="torch", columns=columns, device=device, dtype=torch.float32)
    if len(data) < rows_per_read:
        raise ValueError(f"cached activations at {path} hold {len(data)} rows < {rows_per_read}")
    while True:
        for start in range(0, len(data) - rows_per_read + 1, rows_per_read):
            rows = data[start : start + rows_per_read]
            flat = {h: rearrange(rows[h], "rows ctx d -> (rows ctx) d") for h in hook_names}
            if exclude_tokens is not None and "token_ids" in rows:
                keep = ~torch.isin(rows["token_ids"].flatten().long(), exclude_tokens.to(device))
                flat = {h: t[keep] for h, t in flat.items()}
            yield flat


def pair_loader(
    model: Any,
    cfg: TranscoderTrainingConfig,
    hooks: list[str],
    *,
    dataset: Any,
    cached_activations_path: str | Path | None,
    training_tokens: int,
    train_batch_size_tokens: int,
    context_size: int,
    store_batch_size_prompts: int,
    n_batches_in_buffer: int,
    exclude_special_tokens: bool,
) -> Iterator[dict[str, Tensor]]:
    """Shuffled minibatches ``{hook: [batch, d]}`` of token-aligned pairs, from the cache
    when ``cached_activations_path`` is given, else live from ``dataset``."""
    special = special_token_ids(model) if exclude_special_tokens else None
    if cached_activations_path is not None:
        return multi_hook_concat_split_iter(
            buffer_size=n_batches_in_buffer * context_size * store_batch_size_prompts,
            batch_size=train_batch_size_tokens,
            activations_loader=cached_pair_batches(
                cached_activations_path, hooks, store_batch_size_prompts, special, cfg.device
            ),
            hook_names=hooks,
        )
    if dataset is None:
        raise ValueError("pass dataset or cached_activations_path")
    store = ActivationsStore.from_config_multi_hook(
        model,
        dataset=dataset,
        hook_names=hooks,
        hook_d_ins={hooks[0]: cfg.d_in, hooks[1]: cfg.d_out},
        streaming=False,
        context_size=context_size,
        n_batches_in_buffer=n_batches_in_buffer,
        total_training_tokens=training_tokens,
        store_batch_size_prompts=store_batch_size_prompts,
        train_batch_size_tokens=train_batch_size_tokens,
        device=cfg.device,
        exclude_special_tokens=special,
    )
    return store.get_multi_hook_data_loader()


def train_transcoder(
    model: Any,
    cfg: TranscoderTrainingConfig,
    hook_in: str,
    hook_out: str,
    output_dir: str | Path,
    *,
    dataset: Any = None,
    cached_activations_path: str | Path | None = None,
    training_tokens: int = 200_000,
    train_batch_size_tokens: int = 1024,
    context_size: int = 128,
    lr: float = 1e-3,
    seed: int = 42,
    store_batch_size_prompts: int = 8,
    n_batches_in_buffer: int = 8,
    exclude_special_tokens: bool = True,
    model_name: str = "custom",
    logger: LoggingConfig | None = None,
) -> tuple[Transcoder, TranscoderTraining]:
    """Train a transcoder from ``hook_in`` to ``hook_out`` and save it to ``output_dir``.

    Activations come from ``cached_activations_path`` when given (both hooks cached),
    else live from ``dataset`` through SAELens's multi-hook ActivationsStore. ``logger``
    with wandb on (:func:`bae_lens.train.wandb_logging`): SAELens's trainer logs to a
    wandb run opened here, as SAELens's runner would.
    """
    check_hooks(model, [hook_in, hook_out])
    if training_tokens < train_batch_size_tokens:
        raise ValueError(
            f"training_tokens={training_tokens} is smaller than one batch "
            f"(train_batch_size_tokens={train_batch_size_tokens})"
        )
    torch.manual_seed(seed)
    loader = pair_loader(
        model, cfg, [hook_in, hook_out], dataset=dataset,
        cached_activations_path=cached_activations_path, training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens, context_size=context_size,
        store_batch_size_prompts=store_batch_size_prompts,
        n_batches_in_buffer=n_batches_in_buffer, exclude_special_tokens=exclude_special_tokens,
    )  # fmt: skip
    sae = TranscoderTraining(cfg)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=training_tokens,
            train_batch_size_samples=train_batch_size_tokens,
            lr=lr,
            lr_end=lr / 10,  # SAELens runner's default; unused by the constant schedule
            device=cfg.device,
            logger=logger or LoggingConfig(log_to_wandb=False),
        ),
        sae=sae,
        data_provider=(torch.cat([b[hook_in], b[hook_out]], dim=-1) for b in loader),
    )
    if logger is not None and logger.log_to_wandb:
        import wandb

        wandb.init(project=logger.wandb_project, entity=logger.wandb_entity,
                   name=logger.run_name, config=cfg.to_dict())  # fmt: skip
        try:
            trainer.fit()
        finally:
            wandb.finish()
    else:
        trainer.fit()
    inference = sae.to_inference(
        {
            "hook_name": hook_in,
            "hook_name_out": hook_out,
            "model_name": model_name,
            "context_size": context_size,
            "prepend_bos": True,
            "exclude_special_tokens": exclude_special_tokens,
        }
    )
    output_dir = Path(output_dir)
    inference.save_model(output_dir)
    with open(output_dir / "training_log.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in sae.training_log)
    return inference, sae


def special_token_ids(model: Any) -> Int[Tensor, " n_special"] | None:
    from sae_lens.util import get_special_token_ids

    if getattr(model, "tokenizer", None) is None:
        return None
    ids = get_special_token_ids(model.tokenizer)
    return torch.tensor(ids, dtype=torch.long) if ids else None
