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
    """WANDB_MODE=offline under tmp_path; returns the list every logged payload (plus its
    run's name as ``_run`` and whether it is offline as ``_offline``) is appended to (``wandb.init`` rebinds ``wandb.log`` to its run's ``log``, so the spy sits on
    ``Run.log``; the real method still runs)."""
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged: list[dict[str, Any]] = []
    real_log = Run.log

    def spy(self: Run, data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        logged.append(dict(data) | {"_run": self.name, "_offline": self.offline})
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


def test_compare_logs_each_dictionary_to_its_own_run(
    tiny_config: HookedTransformerConfig, tmp_path: Path, offline_wandb: list[dict[str, Any]]
) -> None:
    from bae_lens.compare import CompareSettings, run_compare

    torch.manual_seed(0)
    model = HookedSAETransformer(tiny_config).eval()
    ids = torch.randint(1, 50, (48, 32))
    train = Dataset.from_dict({"input_ids": ids.tolist()})
    settings = CompareSettings(
        hook=HOOK, expansion=2, training_tokens=512, batch_tokens=128, context_size=32,
        n_batches_for_norm_estimate=2, exclude_special_tokens=False,
    )  # fmt: skip
    run_compare(
        model, train, ids[:4], ["bae", "transcoder_bae"], settings, tmp_path / "w",
        tmp_path / "out", eval_batch_size=4,
        wandb=wandb_logging("bae-test", run_name="cmp", log_frequency=1),
    )  # fmt: skip
    runs = {record["_run"]: set(record) for record in offline_wandb}
    assert set(runs) == {"cmp-bae", "cmp-transcoder_bae"}
    assert any(k.startswith("metrics/bae/") for k in runs["cmp-bae"])
    assert "losses/mse_loss" in runs["cmp-transcoder_bae"]
    assert all(record["_offline"] for record in offline_wandb)
