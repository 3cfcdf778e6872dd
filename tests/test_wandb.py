"""wandb from SAELens's runner (``train_sae(..., logger=wandb_logging(...))``), in offline
mode: the run is written under the test's folder, nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

import bae_lens
from bae_lens.train import train_sae, wandb_logging

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """WANDB_MODE=offline under tmp_path; returns the list every logged payload is appended
    to (``wandb.init`` rebinds ``wandb.log`` to its run's ``log``, so the spy sits on
    ``Run.log``; the real method still runs)."""
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged: list[dict[str, Any]] = []
    real_log = Run.log

    def spy(self: Run, data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        logged.append(dict(data))
        real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    return logged


def test_wandb_logging_config_names_project_entity_and_run() -> None:
    cfg = wandb_logging("proj", entity="team", run_name="run-1", log_frequency=5)
    assert cfg.log_to_wandb
    assert (cfg.wandb_project, cfg.wandb_entity, cfg.run_name) == ("proj", "team", "run-1")
    assert cfg.wandb_log_frequency == 5


def test_bae_training_logs_losses_and_code_statistics_offline(
    tiny_config: HookedTransformerConfig, tmp_path: Path, offline_wandb: list[dict[str, Any]]
) -> None:
    torch.manual_seed(0)
    model = HookedSAETransformer(tiny_config)
    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (200, 32)).tolist()})
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(d_in=32, d_sae=64, entropy_coefficient=0.1)
    train_sae(
        model, ds, cfg, HOOK, tmp_path / "bae", training_tokens=2048,
        train_batch_size_tokens=256, context_size=32, exclude_special_tokens=False,
        store_batch_size_prompts=4, logger=wandb_logging("bae-test", run_name="tiny", log_frequency=1),
    )  # fmt: skip
    keys = set().union(*offline_wandb)
    assert {"losses/mse_loss", "losses/entropy_loss", "metrics/l0"} <= keys
    assert any(k.startswith("metrics/bae/") for k in keys), sorted(keys)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_training_without_wandb_logs_nothing(
    tiny_config: HookedTransformerConfig, tmp_path: Path, offline_wandb: list[dict[str, Any]]
) -> None:
    model = HookedSAETransformer(tiny_config)
    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (100, 32)).tolist()})
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(d_in=32, d_sae=64)
    train_sae(
        model, ds, cfg, HOOK, tmp_path / "bae", training_tokens=512,
        train_batch_size_tokens=256, context_size=32, exclude_special_tokens=False,
        store_batch_size_prompts=4,
    )  # fmt: skip
    assert offline_wandb == [] and not (tmp_path / "wandb").exists()
