"""Activation cache, baselines through SAELens's runner, transcoder training (tiny model)."""

from __future__ import annotations

import datasets
import pytest
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer, HookedTransformerConfig

import bae_lens  # noqa: F401  (registers "bae")
from bae_lens.baselines import (
    RANDOM_CONTROL,
    SAELENS_BASELINES,
    RandomEncoderBAETraining,
    baseline_config,
    cache_activations,
    cached_hooks,
)
from bae_lens.train import train_sae
from bae_lens.transcoder_training import train_transcoder
from bae_lens.transcoders import BinaryTranscoder, TranscoderTrainingConfig

D, CTX = 32, 32
HOOK = "blocks.0.hook_resid_post"
T_IN, T_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"


@pytest.fixture(scope="module")
def model(tiny_config: HookedTransformerConfig) -> HookedTransformer:
    torch.manual_seed(0)
    cfg = tiny_config
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def dataset() -> datasets.Dataset:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (64, CTX), generator=gen)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist()})


@pytest.fixture(scope="module")
def cache(tmp_path_factory, model, dataset):
    path = tmp_path_factory.mktemp("cache") / "acts"
    return cache_activations(
        model, dataset, [HOOK, T_IN, T_OUT], path, n_tokens=40 * CTX, context_size=CTX
    )


def test_cache_holds_every_hook_token_aligned(cache, model, dataset):
    data = datasets.load_from_disk(str(cache))
    assert len(data) == 40
    assert set(cached_hooks(cache)) == {HOOK, T_IN, T_OUT}
    data.set_format("torch")
    row = data[0]
    _, ref = model.run_with_cache(row["token_ids"][None].long(), names_filter=[HOOK, T_OUT])
    assert torch.allclose(row[HOOK], ref[HOOK][0], atol=1e-5)
    assert torch.allclose(row[T_OUT], ref[T_OUT][0], atol=1e-5)


def test_cache_refuses_bad_input(tmp_path, model, dataset):
    with pytest.raises(ValueError, match="blocks.7.hook_resid_post"):
        cache_activations(
            model,
            dataset,
            ["blocks.7.hook_resid_post"],
            tmp_path / "a",
            n_tokens=64,
            context_size=CTX,
        )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        cache_activations(model, dataset, [HOOK], tmp_path / "b", n_tokens=64, context_size=CTX)


@pytest.mark.parametrize("name", [*SAELENS_BASELINES, RANDOM_CONTROL])
def test_baseline_trains_through_runner_on_cache(name, tmp_path, model, dataset, cache):
    cfg = baseline_config(name, D, 64, k=4, firing_rate=0.1)
    train_sae(
        model,
        dataset,
        cfg,
        HOOK,
        tmp_path / name,
        training_tokens=4 * 128,
        train_batch_size_tokens=128,
        context_size=CTX,
        exclude_special_tokens=False,
        use_cached_activations=True,
        cached_activations_path=str(cache),
        n_batches_for_norm_estimate=2,
    )
    sae = SAE.load_from_disk(tmp_path / name)
    # SAELens saves a BatchTopK SAE as a JumpReLU (its batch threshold becomes the jump)
    expected = {RANDOM_CONTROL: "bae", "batchtopk": "jumprelu"}.get(name, name)
    assert sae.cfg.architecture() == expected
    assert sae.cfg.metadata.hook_name == HOOK
    assert sae(torch.randn(3, D)).shape == (3, D)


def test_random_control_freezes_its_encoder():
    sae = RandomEncoderBAETraining(baseline_config(RANDOM_CONTROL, D, 64, firing_rate=0.2))
    assert not sae.W_enc.requires_grad and not sae.b_enc.requires_grad
    assert sae.W_dec.requires_grad and sae.b_dec.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "name='nope' is not one of"),
        ({"name": RANDOM_CONTROL, "firing_rate": 1.5}, "firing_rate=1.5"),
    ],
)
def test_baseline_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        baseline_config(d_in=D, d_sae=64, **kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("code", "tanh"),
        ("estimator", "bogus"),
        ("covariance_penalty", "l3"),
        ("normalize_activations", "expected_average_only_in"),
        ("init_firing_rate", 0.0),
    ],
)
def test_transcoder_config_rejects(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        TranscoderTrainingConfig(d_in=D, d_sae=64, d_out=D, **{field: value})


@pytest.mark.parametrize("code", ["relu", "binary"])
def test_transcoder_training_reduces_loss(code, tmp_path, model, dataset):
    torch.manual_seed(0)
    cfg = TranscoderTrainingConfig(
        d_in=D, d_sae=64, d_out=D, code=code, log_every=1, l1_coefficient=0.1
    )
    sae, training = train_transcoder(
        model,
        cfg,
        T_IN,
        T_OUT,
        tmp_path / code,
        dataset=dataset,
        training_tokens=40 * 128,
        train_batch_size_tokens=128,
        context_size=CTX,
        lr=3e-3,
        exclude_special_tokens=False,
    )
    mse = [r["mse_loss"] for r in training.training_log]
    assert sum(mse[-5:]) / 5 < 0.7 * sum(mse[:5]) / 5
    loaded = SAE.load_from_disk(tmp_path / code)
    assert loaded.cfg.architecture() == ("transcoder" if code == "relu" else "bae_transcoder")
    assert loaded.cfg.metadata.hook_name_out == T_OUT
    x = torch.randn(5, D)
    assert torch.allclose(loaded(x), sae(x), atol=1e-6)
    if code == "binary":
        assert isinstance(loaded, BinaryTranscoder)
        assert set(loaded.encode(x).unique().tolist()) <= {0.0, 1.0}


def test_transcoder_trains_from_cache(tmp_path, model, cache):
    cfg = TranscoderTrainingConfig(d_in=D, d_sae=64, d_out=D, code="binary", log_every=1)
    _, training = train_transcoder(
        model,
        cfg,
        T_IN,
        T_OUT,
        tmp_path / "tc",
        cached_activations_path=cache,
        training_tokens=4 * 128,
        train_batch_size_tokens=128,
        context_size=CTX,
        exclude_special_tokens=False,
    )
    assert len(training.training_log) == 4


def test_transcoder_bad_hooks_and_sizes(tmp_path, model, dataset):
    cfg = TranscoderTrainingConfig(d_in=D, d_sae=64, d_out=D)
    with pytest.raises(ValueError, match="blocks.5.hook_mlp_out"):
        train_transcoder(model, cfg, T_IN, "blocks.5.hook_mlp_out", tmp_path, dataset=dataset)
    with pytest.raises(ValueError, match="training_tokens=10"):
        train_transcoder(model, cfg, T_IN, T_OUT, tmp_path, dataset=dataset, training_tokens=10)
    with pytest.raises(ValueError, match="dataset or cached_activations_path"):
        train_transcoder(model, cfg, T_IN, T_OUT, tmp_path, training_tokens=2048)
