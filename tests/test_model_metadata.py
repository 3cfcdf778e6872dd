"""A saved SAE names its model so that our loader (and tools that read
``metadata.model_name``) can reload it from the metadata alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

import bae_lens
from bae_lens import models
from bae_lens.model_cache import EMBEDDED_HF_NAME, GEMMA_HF_NAME, reloadable_model_name
from bae_lens.train import train_sae

HOOK = "blocks.0.hook_resid_post"


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("smollm2-135m-instruct", EMBEDDED_HF_NAME),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", EMBEDDED_HF_NAME),
        ("gemma-3-270m", GEMMA_HF_NAME),
        ("gpt2", "gpt2"),
    ],
)
def test_reloadable_model_name(name: str, saved: str) -> None:
    assert reloadable_model_name(name) == saved


def test_saved_bae_records_the_hub_name_and_bos_policy(
    tiny_config: HookedTransformerConfig, tmp_path: Path
) -> None:
    model = HookedSAETransformer(tiny_config)
    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (40, 32)).tolist()})
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(d_in=32, d_sae=64)
    train_sae(
        model, ds, cfg, HOOK, tmp_path / "bae", model_name="smollm2-135m-instruct",
        training_tokens=512, train_batch_size_tokens=256, context_size=32,
        exclude_special_tokens=False, store_batch_size_prompts=4,
    )  # fmt: skip
    metadata = json.loads((tmp_path / "bae" / "cfg.json").read_text())["metadata"]
    assert metadata["model_name"] == EMBEDDED_HF_NAME
    assert metadata["model_from_pretrained_kwargs"] == {
        "default_prepend_bos": tiny_config.default_prepend_bos
    }


def _saved(tmp_path: Path, model_name: str, hook: str = HOOK, bos: bool = False) -> Path:
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64))
    sae.cfg.metadata.model_name = model_name
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_from_pretrained_kwargs = {"default_prepend_bos": bos}
    sae.save_model(tmp_path / "sae")
    return tmp_path / "sae"


def test_load_model_for_sae_reads_name_and_kwargs(
    tiny_config: HookedTransformerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_load(name: str, **kwargs: Any) -> HookedTransformer:
        calls.append({"name": name, **kwargs})
        return HookedTransformer(tiny_config)

    monkeypatch.setattr(models, "load_model", fake_load)
    folder = _saved(tmp_path, "someone/model")
    models.load_model_for_sae(folder)
    assert calls[-1]["name"] == "someone/model" and calls[-1]["default_prepend_bos"] is False
    from bae_lens.io import load_sae

    models.load_model_for_sae(load_sae(folder))  # an SAE object works as well
    assert calls[-1]["name"] == "someone/model"
    with pytest.raises(ValueError, match=r"hook_name='blocks.7.hook_resid_post' is not a hook"):
        models.load_model_for_sae(_saved(tmp_path / "b", "m", hook="blocks.7.hook_resid_post"))
    with pytest.raises(ValueError, match=r"model_name='custom' names no loadable model"):
        models.load_model_for_sae(_saved(tmp_path / "c", "custom"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (models.embedded_cache_dir() / "config.json").is_file(),
    reason="embedded model cache not built",
)
def test_embedded_model_reloads_from_a_saved_sae_alone(tmp_path: Path) -> None:
    sae = StandardSAE(StandardSAEConfig(d_in=576, d_sae=64))
    sae.cfg.metadata.model_name = reloadable_model_name("smollm2-135m-instruct")
    sae.cfg.metadata.hook_name = "blocks.14.hook_resid_post"
    sae.cfg.metadata.model_from_pretrained_kwargs = {"default_prepend_bos": True}
    sae.save_model(tmp_path / "sae")
    model = models.load_model_for_sae(tmp_path / "sae")
    assert model.cfg.d_model == 576 and model.cfg.default_prepend_bos
