"""Baseline dictionaries trained through SAELens's runner on the same cached activations.

LM forward passes dominate the cost on a CPU, so activations are computed once
(:func:`cache_activations`) and every dictionary reads them back: the BAE, SAELens's
``standard`` (L1), ``topk``, ``batchtopk``, ``jumprelu`` and ``gated`` SAEs and the
random-code control all train through ``LanguageModelSAETrainingRunner`` with
``use_cached_activations=True`` (via :func:`bae_lens.train.train_sae`, the main job's
route), so they see literally the same activations in the same order. The cache is
SAELens's cached-activations format (a local ``datasets`` folder with one
``[context_size, d]`` column per hook and ``token_ids``), written by our
:func:`cache_activations` rather than ``CacheActivationsRunner``: that runner loads its
model by name (the hub) and caches one hook, while one pass here fills every hook the
comparison needs (the transcoders' input and output hooks too) through SAELens's
multi-hook ``ActivationsStore``. Nothing is pushed to the hub (no ``hf_repo_id``).

Random-code control (``"random_bae"``): a BAE whose encoder is frozen at its random
initialisation (W_enc = W_dec^T of a random W_dec, SAELens's init) with each bit's
threshold b_enc set on the first batch so the bit fires on a given fraction of tokens
(default: the trained BAE's mean firing rate, so the L0s match); only the decoder
(W_dec, b_dec) is trained, on MSE alone. This is a random-hyperplane hash of x, so it
answers "how much of the BAE's fidelity does a code with no learned encoder already
give, at the same density?". A code drawn independently of x would carry no
information about x and reduce to the mean, which tells nothing; frozen random
projections are the standard control for learned encoders.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from sae_lens import CacheActivationsRunner
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAEConfig
from sae_lens.saes.gated_sae import GatedTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAEConfig
from sae_lens.saes.sae import TrainingSAEConfig
from sae_lens.saes.standard_sae import StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
from sae_lens.training.activations_store import ActivationsStore
from tqdm.auto import tqdm
from typing_extensions import override

from bae_lens.bae import (
    BinaryAutoencoder,
    BinaryAutoencoderConfig,
    BinaryAutoencoderTraining,
    BinaryAutoencoderTrainingConfig,
)
from bae_lens.hidden_states import check_hooks

logger = logging.getLogger(__name__)

SAELENS_BASELINES = ("standard", "topk", "batchtopk", "jumprelu", "gated")
RANDOM_CONTROL = "random_bae"
NORMALIZE = "expected_average_only_in"  # as `bae-lens train`; folded into the weights


@dataclass(kw_only=True)
class RandomEncoderBAETrainingConfig(BinaryAutoencoderTrainingConfig):
    """A BAE whose encoder stays at its random start; saved as a plain ``"bae"``."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return RANDOM_CONTROL


class RandomEncoderBAETraining(BinaryAutoencoderTraining):
    """W_enc and b_enc frozen (no gradient) after the data-dependent threshold init."""

    def __init__(self, cfg: BinaryAutoencoderTrainingConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.W_enc.requires_grad_(False)
        self.b_enc.requires_grad_(False)


def register_baselines() -> None:
    """Register the random control with SAELens (training under ``"random_bae"``, inference
    as a plain BAE, which is what it saves as); idempotent."""
    SAE_TRAINING_CLASS_REGISTRY.setdefault(
        RANDOM_CONTROL, (RandomEncoderBAETraining, RandomEncoderBAETrainingConfig)
    )
    SAE_CLASS_REGISTRY.setdefault(RANDOM_CONTROL, (BinaryAutoencoder, BinaryAutoencoderConfig))


register_baselines()


def baseline_config(
    name: str,
    d_in: int,
    d_sae: int,
    *,
    k: int = 32,
    l1_coefficient: float = 5.0,
    device: str = "cpu",
    firing_rate: float = 0.05,
    dtype: str = "float32",
) -> TrainingSAEConfig:
    """SAELens training config of baseline ``name`` at width ``d_sae``.

    ``k``: active latents of topk / batchtopk and target L0 of jumprelu (its "quadratic"
    sparsity loss); ``l1_coefficient``: standard and gated; ``firing_rate``: the random
    control's per-bit firing rate.
    """
    common: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "device": device,
        "dtype": dtype,
        "normalize_activations": NORMALIZE,
    }
    if name == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=l1_coefficient, **common)
    if name == "gated":
        return GatedTrainingSAEConfig(l1_coefficient=l1_coefficient, **common)
    if name == "topk":
        return TopKTrainingSAEConfig(k=k, **common)
    if name == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=k, **common)
    if name == "jumprelu":
        return JumpReLUTrainingSAEConfig(
            jumprelu_sparsity_loss_mode="quadratic", target_l0=float(k), **common
        )
    if name == RANDOM_CONTROL:
        if not 0.0 < firing_rate < 1.0:
            raise ValueError(f"firing_rate={firing_rate!r} must be in (0, 1)")
        return RandomEncoderBAETrainingConfig(init_firing_rate=firing_rate, **common)
    allowed = [*SAELENS_BASELINES, RANDOM_CONTROL]
    raise ValueError(f"baseline name={name!r} is not one of {allowed}")


def cache_activations(
    model: Any,
    dataset: Any,
    hook_names: list[str],
    path: str | Path,
    *,
    n_tokens: int,
    context_size: int = 128,
    store_batch_size_prompts: int = 8,
    rows_per_shard: int = 256,
) -> Path:
    """Write the activations of ``hook_names`` on ``n_tokens`` tokens of ``dataset`` (rounded
    up to whole ``context_size`` rows) to ``path``, in SAELens's cached-activations format.

    One LM forward pass per batch fills every hook (SAELens's multi-hook store, stopped
    after the last block needed). Rows follow the store's token stream, i.e. the order in
    which ``bae-lens train`` would see them. ``path`` must not exist or be empty.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"cache path {str(path)!r} exists and is not empty")
    check_hooks(model, hook_names)
    if n_tokens < context_size:
        raise ValueError(
            f"n_tokens={n_tokens} is smaller than one row (context_size={context_size})"
        )
    store = ActivationsStore.from_config_multi_hook(
        model,
        dataset=dataset,
        hook_names=hook_names,
        hook_d_ins=dict.fromkeys(hook_names, 1),  # not used when reading activations
        streaming=False,
        context_size=context_size,
        store_batch_size_prompts=store_batch_size_prompts,
        total_training_tokens=n_tokens,
    )
    n_rows = math.ceil(n_tokens / context_size)
    tmp = path / ".tmp_shards"
    tmp.mkdir(parents=True)
    shard: dict[str, list[torch.Tensor]] = {}
    n_done = n_shards = 0
    with tqdm(total=n_rows, desc="caching activations") as bar:
        while n_done < n_rows:
            tokens = store.get_batch_tokens(min(store_batch_size_prompts, n_rows - n_done))
            acts = store.get_multi_hook_activations(tokens)  # {hook: [rows, ctx, d]}
            for hook, value in acts.items():
                shard.setdefault(hook, []).append(value.float().cpu())
            shard.setdefault("token_ids", []).append(tokens.int().cpu())
            n_done += tokens.shape[0]
            bar.update(tokens.shape[0])
            if sum(t.shape[0] for t in shard["token_ids"]) >= rows_per_shard or n_done >= n_rows:
                _write_shard(shard, tmp / f"shard_{n_shards:05d}", context_size)
                shard, n_shards = {}, n_shards + 1
    CacheActivationsRunner._consolidate_shards(tmp, path, copy_files=False)
    return path


def _write_shard(shard: dict[str, list[torch.Tensor]], folder: Path, context_size: int) -> None:
    columns = {name: torch.cat(parts) for name, parts in shard.items()}
    features = {
        name: datasets.Array2D(shape=(context_size, t.shape[-1]), dtype="float32")
        for name, t in columns.items()
        if name != "token_ids"
    }
    features_all = datasets.Features(
        {**features, "token_ids": datasets.Sequence(datasets.Value("int32"), length=context_size)}
    )
    data = datasets.Dataset.from_dict(columns, features=features_all)
    data.save_to_disk(str(folder), num_shards=1)


def cached_hooks(path: str | Path) -> list[str]:
    """The hook columns of a cached-activations folder."""
    data = datasets.load_from_disk(str(path))
    return [c for c in data.column_names if c != "token_ids"]


def remove_cache(path: str | Path) -> None:
    """Delete a cache folder written by :func:`cache_activations`."""
    shutil.rmtree(path, ignore_errors=True)
