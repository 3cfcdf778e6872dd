"""End to end: SAELens's runner trains a BAE on a HookedTransformer; splice and attach it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sae_lens import SAE, HookedSAETransformer
from transformer_lens import HookedTransformerConfig

import bae_lens
from bae_lens.hooks import splice
from bae_lens.train import TRAINING_LOG_FILENAME, buffer_batches, train_sae

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_model(tiny_config: HookedTransformerConfig) -> HookedSAETransformer:
    torch.manual_seed(0)
    cfg = tiny_config
    model = HookedSAETransformer(cfg)
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def trained(tiny_model: HookedSAETransformer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bae")
    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (400, 32)).tolist()})
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(
        d_in=32,
        d_sae=64,
        entropy_coefficient=0.1,
        covariance_coefficient=1.0,
        covariance_penalty="abs",
        log_every=1,
    )
    train_sae(
        tiny_model,
        ds,
        cfg,
        HOOK,
        out,
        training_tokens=8192,
        train_batch_size_tokens=256,
        context_size=32,
        exclude_special_tokens=False,
        store_batch_size_prompts=4,
    )
    return out


def test_runner_saves_sae_lens_format_and_training_log(trained: Path) -> None:
    assert {"cfg.json", "sae_weights.safetensors", "runner_cfg.json"} <= {
        p.name for p in trained.iterdir()
    }
    cfg = json.loads((trained / "cfg.json").read_text())
    assert cfg["architecture"] == "bae"
    assert cfg["metadata"]["hook_name"] == HOOK
    details = cfg["metadata"]["training_architecture_details"]
    assert details["covariance_penalty"] == "abs"
    log = [json.loads(line) for line in (trained / TRAINING_LOG_FILENAME).read_text().splitlines()]
    assert len(log) == 8192 // 256
    assert all(r["entropy_loss"] > 0 and r["covariance_loss"] > 0 for r in log)
    assert log[-1]["mse_loss"] < log[0]["mse_loss"]


def test_loaded_bae_splices_into_run_with_hooks(
    trained: Path, tiny_model: HookedSAETransformer
) -> None:
    sae = SAE.load_from_disk(trained)
    assert isinstance(sae, bae_lens.BinaryAutoencoder)
    tokens = torch.randint(0, 50, (3, 32))
    clean = tiny_model(tokens)
    spliced = tiny_model.run_with_hooks(tokens, fwd_hooks=splice(sae))
    kept = tiny_model.run_with_hooks(tokens, fwd_hooks=splice(sae, keep_error=True))
    assert not torch.allclose(spliced, clean, atol=1e-4)
    torch.testing.assert_close(kept, clean, atol=1e-5, rtol=1e-5)
    # the hook's replacement is exactly decode(encode(x))
    _, cache = tiny_model.run_with_cache(tokens, names_filter=HOOK)
    x = cache[HOOK]
    recon = sae.decode(sae.encode(x))
    assert set(sae.encode(x).unique().tolist()) <= {0.0, 1.0}
    expected = tiny_model.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: recon)])
    torch.testing.assert_close(spliced, expected)


def test_hooked_sae_transformer_add_sae_and_run_with_saes(
    trained: Path, tiny_model: HookedSAETransformer
) -> None:
    sae = SAE.load_from_disk(trained)
    tokens = torch.randint(0, 50, (2, 32))
    spliced = tiny_model.run_with_hooks(tokens, fwd_hooks=splice(sae))
    torch.testing.assert_close(tiny_model.run_with_saes(tokens, saes=[sae]), spliced)
    tiny_model.add_sae(sae)
    try:
        torch.testing.assert_close(tiny_model(tokens), spliced)
        _, cache = tiny_model.run_with_cache(tokens)
        acts = cache[f"{HOOK}.hook_sae_acts_post"]
        assert acts.shape == (2, 32, 64)
    finally:
        tiny_model.reset_saes()
    tiny_model.add_sae(sae, use_error_term=True)
    try:
        torch.testing.assert_close(
            tiny_model(tokens), tiny_model.run_with_hooks(tokens), atol=1e-5, rtol=1e-5
        )
    finally:
        tiny_model.reset_saes()


def test_bad_hook_and_empty_data(tiny_model: HookedSAETransformer, tmp_path: Path) -> None:
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(d_in=32, d_sae=64)
    ds = Dataset.from_dict({"input_ids": [[1] * 32]})
    with pytest.raises(ValueError, match="blocks.9.hook_resid_post"):
        train_sae(tiny_model, ds, cfg, "blocks.9.hook_resid_post", tmp_path)
    with pytest.raises(ValueError, match="empty"):
        train_sae(tiny_model, ds.select([]), cfg, HOOK, tmp_path)
    with pytest.raises(ValueError, match="training_tokens"):
        train_sae(tiny_model, ds, cfg, HOOK, tmp_path, training_tokens=10)


def test_buffer_covers_several_batches() -> None:
    n = buffer_batches(train_batch_size_tokens=4096, context_size=128, store_batch_size_prompts=8)
    assert n * 128 * 8 >= 8 * 4096


def test_outlier_filter_drops_massive_rows_only() -> None:
    from bae_lens.train import OutlierFilter

    rows = torch.ones(8, 4)
    rows[3] *= 1000.0  # a massive activation
    store = OutlierFilter(iter([rows]), factor=10.0)
    kept = next(store)
    assert kept.shape == (7, 4) and store.n_dropped == 1 and store.n_seen == 8
    with pytest.raises(ValueError, match="outlier_norm_factor"):
        OutlierFilter(iter([rows]), factor=0.5)


def test_outlier_filter_replays_the_norm_estimate_batches_once() -> None:
    from bae_lens.train import OutlierFilter

    batches = [torch.full((4, 3), float(i)) for i in range(5)]
    store = OutlierFilter(iter(batches), factor=None, replay_first=2)
    assert store.recording
    served = [int(next(store)[0, 0]) for _ in range(7)]
    # the estimate reads 0, 1; training then gets 0, 1 again and goes on with fresh rows
    assert served == [0, 1, 0, 1, 2, 3, 4]
    assert not store.recording
    assert store.n_seen == 5 * 4  # each batch fetched (forward pass paid) once


def test_norm_estimate_costs_no_extra_forward_passes(
    tiny_model: HookedSAETransformer, tmp_path: Path
) -> None:
    from bae_lens.stages import StageClock

    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (400, 32)).tolist()})
    cfg = bae_lens.BinaryAutoencoderTrainingConfig(
        d_in=32, d_sae=64, normalize_activations="expected_average_only_in"
    )
    clock = StageClock()
    train_sae(
        tiny_model, ds, cfg, HOOK, tmp_path / "bae", training_tokens=4096,
        train_batch_size_tokens=256, context_size=32, exclude_special_tokens=False,
        store_batch_size_prompts=4, n_batches_for_norm_estimate=4, clock=clock,
    )  # fmt: skip
    stages = clock.as_dict()
    assert set(stages) >= {"norm estimate", "activation generation", "SAE steps", "tokenisation"}
    generated = stages["norm estimate"]["tokens"] + stages["activation generation"]["tokens"]
    # SAELens alone would generate 4096 + 4 * 256 tokens plus its buffer; here the norm
    # estimate's 1024 are trained on, so only the buffer's fill is extra
    buffer = buffer_batches(256, 32, 4) * 4 * 32
    assert 4096 <= generated <= 4096 + buffer


def test_outlier_filter_drops_non_finite_rows_and_skips_emptied_batches() -> None:
    from bae_lens.train import OutlierFilter

    ok = torch.ones(6, 4)
    poisoned = ok.clone()
    poisoned[2, 1] = float("nan")  # one NaN row must not poison the median
    all_bad = torch.full((3, 4), float("inf"))
    single = torch.ones(1, 4)
    store = OutlierFilter(iter([poisoned, all_bad, single, ok]), factor=10.0)
    first = next(store)
    assert first.shape == (5, 4) and torch.isfinite(first).all()
    second = next(store)  # the inf batch and the one-row batch are skipped
    assert torch.equal(second, ok)
    assert store.n_non_finite == 4 and store.n_skipped_batches == 2


@pytest.mark.parametrize("rows", [0, 1])
def test_bae_step_refuses_a_minibatch_of_fewer_than_two_rows(rows: int) -> None:
    from sae_lens.saes.sae import TrainStepInput

    sae = bae_lens.BinaryAutoencoderTraining(
        bae_lens.BinaryAutoencoderTrainingConfig(d_in=4, d_sae=8, entropy_coefficient=0.1)
    )
    step = TrainStepInput(torch.randn(rows, 4), {"entropy": 0.1, "covariance": 0.0}, None, 0, False)
    with pytest.raises(ValueError, match=f"minibatch of {rows} row"):
        sae.training_forward_pass(step)
