"""Shared pytest setup: never touch the network, stay on one CPU thread, skip GPU tests.

The environment variables are set at import time, before any test module imports
transformers, datasets or huggingface_hub (which read them once, on import).
"""

from __future__ import annotations

import os

for _name, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("HF_DATASETS_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("WANDB_MODE", "disabled"),
):
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformer_lens import HookedTransformerConfig  # noqa: E402

# Small tensors: extra threads only add scheduling noise on shared CI machines.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_config() -> HookedTransformerConfig:
    """A 2-layer, d_model 32, vocabulary 50 transformer: integration tests without a real model."""
    return HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_ctx=32,
        d_head=8,
        n_heads=4,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
    )
