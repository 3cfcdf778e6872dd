"""bae_lens.bae: exact forward on hand-built weights, the training pass, save/load in a
fresh process, registration, folding and config / input validation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardSAE, StandardTrainingSAE
from safetensors.torch import load_file, save_file

import bae_lens
from bae_lens import (
    BinaryAutoencoder,
    BinaryAutoencoderConfig,
    BinaryAutoencoderTraining,
    BinaryAutoencoderTrainingConfig,
)
from bae_lens.binarize import step_code
from bae_lens.penalties import dependence_penalty, entropy_loss

BAE_FIELDS = ("bits_per_feature", "binarization", "square_wave_period", "output_activation")


def make_inference(d_in: int = 4, d_sae: int = 6, **kwargs: Any) -> BinaryAutoencoder:
    return BinaryAutoencoder(BinaryAutoencoderConfig(d_in=d_in, d_sae=d_sae, **kwargs))


def make_training(d_in: int = 4, d_sae: int = 6, **kwargs: Any) -> BinaryAutoencoderTraining:
    kwargs.setdefault("init_firing_rate", None)
    cfg = BinaryAutoencoderTrainingConfig(d_in=d_in, d_sae=d_sae, **kwargs)
    return BinaryAutoencoderTraining(cfg)


@torch.no_grad()
def randomize(sae: Any, seed: int = 0, scale: float = 2.0) -> Any:
    """Non-trivial weights: every parameter drawn at random (so codes are mixed 0/1)."""
    gen = torch.Generator().manual_seed(seed)
    for param in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
        param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return sae


def step_input(
    x: torch.Tensor,
    step: int = 0,
    entropy: float = 0.0,
    covariance: float = 0.0,
    is_logging_step: bool = False,
) -> TrainStepInput:
    return TrainStepInput(
        sae_in=x,
        coefficients={"entropy": entropy, "covariance": covariance},
        dead_neuron_mask=None,
        n_training_steps=step,
        is_logging_step=is_logging_step,
    )


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- exact forward


@torch.no_grad()
def _hand_built(sae: Any) -> Any:
    sae.W_enc.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]]))
    sae.b_enc.copy_(torch.tensor([0.0, -1.0, 0.25]))
    sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]))
    sae.b_dec.copy_(torch.tensor([0.5, -0.5]))
    return sae


HAND_X = torch.tensor([[1.5, 0.5], [0.5, -0.5], [2.5, 0.5]])
# x - b_dec = [1, 1], [0, 0], [2, 1]
HAND_Z = torch.tensor([[1.0, 0.0, -0.25], [0.0, -1.0, 0.25], [2.0, -1.0, 0.25]])
HAND_H = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])  # z = 0 -> 0
HAND_OUT = torch.tensor([[1.5, -0.5], [2.5, 2.5], [3.5, 2.5]])


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_exact_forward_on_hand_built_weights(cls: str) -> None:
    make = make_inference if cls == "inference" else make_training
    sae = _hand_built(make(d_in=2, d_sae=3))
    with torch.no_grad():
        assert torch.equal(sae.hidden_pre(HAND_X), HAND_Z)
        assert torch.equal(sae.encode_bits(HAND_X), HAND_H)
        assert torch.equal(sae.encode(HAND_X), HAND_H)
        assert torch.equal(sae.decode(HAND_H), HAND_OUT)
        assert torch.equal(sae(HAND_X), HAND_OUT)
        # batch dims beyond one are kept
        assert torch.equal(sae(HAND_X.reshape(3, 1, 2)), HAND_OUT.reshape(3, 1, 2))


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_exact_forward_more_bit_decode(cls: str) -> None:
    make = make_inference if cls == "inference" else make_training
    sae = make(d_in=2, d_sae=2, bits_per_feature=2)
    assert sae.n_bits == 4
    assert tuple(sae.W_enc.shape) == (2, 4) and tuple(sae.W_dec.shape) == (2, 2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, 1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.5, 0.0]))
        sae.W_dec.copy_(torch.tensor([[3.0, 0.0], [0.0, 6.0]]))
        sae.b_dec.zero_()
        x = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
        # z = [1, 1, 0.5, 0] and [-1, 1, -1.5, 2]
        assert torch.equal(sae.encode_bits(x), torch.tensor([[1.0, 1, 1, 0], [0, 1, 0, 1]]))
        values = torch.tensor([[1.0, 1 / 3], [2 / 3, 2 / 3]])  # (b0 + 2 b1) / 3
        torch.testing.assert_close(sae.encode(x), values, rtol=0, atol=1e-7)
        torch.testing.assert_close(sae(x), torch.tensor([[3.0, 2.0], [2.0, 4.0]]))


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_exact_forward_square_wave_and_output_activation(cls: str) -> None:
    if cls == "inference":
        sae: Any = make_inference(
            d_in=2, d_sae=3, binarization="square_wave", output_activation="relu"
        )
    else:
        sae = make_training(d_in=2, d_sae=3, estimator="square_wave", output_activation="relu")
        assert sae.cfg.binarization == "square_wave"
    sae = _hand_built(sae)
    with torch.no_grad():
        # period 2: 1[(z mod 2) < 1]; z rows [1, 0, -0.25], [0, -1, 0.25], [2, -1, 0.25]
        h = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
        assert torch.equal(sae.encode(HAND_X), h)
        out = torch.relu(h @ sae.W_dec + sae.b_dec)
        assert torch.equal(sae(HAND_X), out)
        assert torch.equal(out, torch.tensor([[0.5, 0.5], [3.5, 2.5], [3.5, 2.5]]))


@pytest.mark.parametrize("cls", ["inference", "training"])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("binarization", ["step", "square_wave"])
def test_forward_equals_decode_of_encode(cls: str, k: int, binarization: str) -> None:
    if cls == "inference":
        sae: Any = make_inference(d_in=5, d_sae=7, bits_per_feature=k, binarization=binarization)
    else:
        estimator = "square_wave" if binarization == "square_wave" else "sigmoid"
        sae = make_training(d_in=5, d_sae=7, bits_per_feature=k, estimator=estimator)
    randomize(sae)
    x = _randn(3, 11, 5)
    with torch.no_grad():
        code = sae.encode(x)
        assert code.shape == (3, 11, 7)
        bits = sae.encode_bits(x)
        assert bits.shape == (3, 11, 7 * k)
        assert 0.0 < bits.mean().item() < 1.0
        assert set(bits.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(sae(x), sae.decode(code))


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_hooks_see_pre_activations_and_decoder_values(cls: str) -> None:
    sae: Any = (
        make_inference(bits_per_feature=2)
        if cls == "inference"
        else make_training(bits_per_feature=2)
    )
    randomize(sae)
    x = _randn(8, 4)
    with torch.no_grad():
        _, cache = sae.run_with_cache(x)
        assert torch.equal(cache["hook_sae_acts_pre"], sae.hidden_pre(x))
        assert torch.equal(cache["hook_sae_acts_post"], sae.encode(x))


# ---------------------------------------------------------------- training pass


def test_training_pass_zero_coefficients_gives_zero_aux_losses() -> None:
    sae = randomize(make_training(entropy_coefficient=1.0, covariance_coefficient=1.0))
    x = _randn(32, 4)
    out = sae.training_forward_pass(step_input(x, entropy=0.0, covariance=0.0))
    assert out.losses["entropy_loss"].item() == 0.0
    assert out.losses["covariance_loss"].item() == 0.0
    expected_mse = ((sae(x) - x) ** 2).sum(dim=-1).mean()
    torch.testing.assert_close(out.losses["mse_loss"], expected_mse)
    torch.testing.assert_close(out.loss, expected_mse)


@pytest.mark.parametrize(
    ("penalty", "reduction", "k"),
    [
        ("abs", "sum", 1),
        ("abs", "mean", 2),
        ("frobenius", "mean", 1),
        ("frobenius", "sum", 2),
        ("abs", "per_bit", 1),
    ],
)
def test_training_pass_losses_are_coefficient_times_penalties(
    penalty: str, reduction: str, k: int
) -> None:
    sae = randomize(
        make_training(
            bits_per_feature=k,
            covariance_penalty=penalty,
            covariance_reduction=reduction,
            entropy_reduction="sum" if reduction == "per_bit" else reduction,
            covariance_chunk_size=5,
            entropy_threshold=0.5,
        )
    )
    x = _randn(40, 4)
    out = sae.training_forward_pass(step_input(x, entropy=0.3, covariance=2.5))
    bits = sae.encode_bits(x)
    assert bits.shape == (40, 6 * k)
    expected_entropy = 0.3 * entropy_loss(bits, 0.5, sae.cfg.entropy_reduction)
    if reduction == "per_bit":  # pairwise sum / number of bits
        expected_cov = 2.5 * dependence_penalty(bits, penalty, "sum", chunk_size=5) / (6 * k)
    else:
        expected_cov = 2.5 * dependence_penalty(bits, penalty, reduction, chunk_size=5)
    assert expected_entropy.item() > 0 and expected_cov.item() > 0
    torch.testing.assert_close(out.losses["entropy_loss"], expected_entropy)
    torch.testing.assert_close(out.losses["covariance_loss"], expected_cov)
    torch.testing.assert_close(out.loss, out.losses["mse_loss"] + expected_entropy + expected_cov)
    assert torch.equal(out.feature_acts, sae.encode(x))
    assert torch.equal(out.hidden_pre, sae.hidden_pre(x))


def test_training_pass_gradients_reach_encoder_through_estimator() -> None:
    sae = randomize(make_training(estimator="sigmoid", estimator_temperature=0.7))
    x = _randn(64, 4)
    out = sae.training_forward_pass(step_input(x))
    out.loss.backward()  # mse only
    for param in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0


def test_entropy_loss_gradient_matches_naive_sigmoid_surrogate() -> None:
    t = 0.7
    sae = randomize(make_training(estimator="sigmoid", estimator_temperature=t, dtype="float64"))
    x = _randn(64, 4).double()
    out = sae.training_forward_pass(step_input(x, entropy=0.8))
    out.losses["entropy_loss"].backward()
    assert sae.W_dec.grad is None  # the entropy term never touches the decoder
    # Naive reference: value of step(z), gradient of sigmoid(z / t).
    z = sae.hidden_pre(x).detach().requires_grad_(True)
    soft = torch.sigmoid(z / t)
    h = step_code(z) + (soft - soft.detach())
    (0.8 * entropy_loss(h, 0.0, sae.cfg.entropy_reduction)).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert sae.b_enc.grad is not None and sae.W_enc.grad is not None
    torch.testing.assert_close(sae.b_enc.grad, z.grad.sum(dim=0))
    sae_in = x - sae.b_dec.detach()
    torch.testing.assert_close(sae.W_enc.grad, sae_in.T @ z.grad)


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_data_dependent_init(apply_b_dec_to_input: bool, k: int) -> None:
    sae = make_training(
        d_in=8,
        d_sae=16,
        bits_per_feature=k,
        init_firing_rate=0.1,
        apply_b_dec_to_input=apply_b_dec_to_input,
    )
    x = _randn(200, 8) * 3 + torch.arange(8.0)  # non-zero mean
    sae.training_forward_pass(step_input(x, step=0))
    torch.testing.assert_close(sae.b_dec.detach(), x.mean(dim=0))
    rates = sae.encode_bits(x).mean(dim=0)
    assert rates.shape == (16 * k,)
    torch.testing.assert_close(rates, torch.full_like(rates, 0.1))
    # runs once: a second step-0 batch does not re-initialise
    b_enc = sae.b_enc.detach().clone()
    sae.training_forward_pass(step_input(x + 1.0, step=0))
    assert torch.equal(sae.b_enc.detach(), b_enc)


def test_data_dependent_init_off_keeps_b_enc_init() -> None:
    sae = make_training(init_firing_rate=None, b_enc_init=-0.25)
    assert torch.equal(sae.b_enc.detach(), torch.full((6,), -0.25))
    sae.training_forward_pass(step_input(_randn(16, 4)))
    assert torch.equal(sae.b_enc.detach(), torch.full((6,), -0.25))


def test_entropy_start_step_gate() -> None:
    sae = randomize(make_training(entropy_coefficient=1.0, entropy_start_step=5))
    x = _randn(32, 4)
    before = sae.training_forward_pass(step_input(x, step=4, entropy=1.0))
    at = sae.training_forward_pass(step_input(x, step=5, entropy=1.0))
    assert before.losses["entropy_loss"].item() == 0.0
    torch.testing.assert_close(
        at.losses["entropy_loss"],
        entropy_loss(sae.encode_bits(x), reduction=sae.cfg.entropy_reduction),
    )
    assert at.losses["entropy_loss"].item() > 0


def test_coefficients_follow_config() -> None:
    sae = make_training(
        entropy_coefficient=0.2,
        entropy_warm_up_steps=10,
        covariance_coefficient=3.0,
        covariance_warm_up_steps=4,
        l0_coefficient=0.5,
        l0_warm_up_steps=7,
    )
    coefficients = sae.get_coefficients()
    assert coefficients["entropy"] == (0.2, 10)
    assert coefficients["covariance"] == (3.0, 4)
    assert coefficients["l0"] == (0.5, 7)


def test_training_log_records() -> None:
    sae = randomize(make_training(log_every=2))
    x = _randn(32, 4)
    metrics = []
    for step in range(5):
        out = sae.training_forward_pass(step_input(x, step=step, entropy=0.1, covariance=0.1))
        metrics.append(out.metrics)
    assert [record["step"] for record in sae.training_log] == [0.0, 2.0, 4.0]
    record = sae.training_log[0]
    for key in ("mse_loss", "entropy_loss", "covariance_loss", "entropy_bits", "l0"):
        assert isinstance(record[key], float)
    for key in ("frac_never_on", "frac_always_on", "burst_l0"):
        assert key in record
    rates = sae.encode_bits(x).mean(dim=0)
    assert record["l0"] == pytest.approx(rates.sum().item(), abs=1e-5)
    assert "bae/entropy_bits" in metrics[0] and metrics[1] == {}
    # a SAELens logging step reports metrics without adding a record
    out = sae.training_forward_pass(step_input(x, step=7, is_logging_step=True))
    assert "bae/burst_l0" in out.metrics
    assert len(sae.training_log) == 3


# ---------------------------------------------------------------- save / load

_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file
    import bae_lens  # registers "bae"
    from sae_lens import SAE

    root = sys.argv[1]
    x = load_file(root + "/x.safetensors")["x"]
    report = {}
    for name in ("inference", "training"):
        sae = SAE.load_from_disk(root + "/" + name)
        expected = load_file(root + "/" + name + "_out.safetensors")["out"]
        with torch.no_grad():
            out = sae(x)
        report[name] = {
            "class": type(sae).__name__,
            "max_abs_diff": float((out - expected).abs().max()),
            "bits_per_feature": sae.cfg.bits_per_feature,
            "binarization": sae.cfg.binarization,
        }
    print(json.dumps(report))
    """
)


def test_save_load_round_trip_in_fresh_process(tmp_path: Path) -> None:
    x = _randn(9, 4, seed=7)
    save_file({"x": x}, tmp_path / "x.safetensors")
    inference = randomize(
        make_inference(bits_per_feature=2, output_activation="tanh", square_wave_period=3.0),
        seed=3,
    )
    training = randomize(make_training(estimator="square_wave", square_wave_period=1.5), seed=4)
    inference.save_model(tmp_path / "inference")
    training.save_inference_model(tmp_path / "training")
    for name, sae in (("inference", inference), ("training", training)):
        with torch.no_grad():
            save_file({"out": sae(x)}, tmp_path / f"{name}_out.safetensors")

    cfg = json.loads((tmp_path / "inference" / "cfg.json").read_text())
    assert cfg["architecture"] == "bae"
    assert {f: cfg[f] for f in BAE_FIELDS} == {
        "bits_per_feature": 2,
        "binarization": "step",
        "square_wave_period": 3.0,
        "output_activation": "tanh",
    }
    cfg = json.loads((tmp_path / "training" / "cfg.json").read_text())
    assert cfg["architecture"] == "bae"
    assert {f: cfg[f] for f in BAE_FIELDS} == {
        "bits_per_feature": 1,
        "binarization": "square_wave",
        "square_wave_period": 1.5,
        "output_activation": "identity",
    }
    assert "estimator" not in cfg  # training-only fields stay in metadata
    assert cfg["metadata"]["training_architecture_details"]["estimator"] == "square_wave"
    weights = load_file(tmp_path / "training" / "sae_weights.safetensors")
    assert set(weights) == {"W_enc", "b_enc", "W_dec", "b_dec"}

    result = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name, bits, binarization in (("inference", 2, "step"), ("training", 1, "square_wave")):
        assert report[name]["class"] == "BinaryAutoencoder"
        assert report[name]["max_abs_diff"] == 0.0
        assert report[name]["bits_per_feature"] == bits
        assert report[name]["binarization"] == binarization


def test_training_checkpoint_reload_skips_data_init(tmp_path: Path) -> None:
    sae = randomize(make_training(init_firing_rate=0.1))
    sae.save_model(tmp_path)
    loaded = BinaryAutoencoderTraining.load_from_disk(tmp_path)
    assert isinstance(loaded, BinaryAutoencoderTraining)
    x = _randn(16, 4)
    loaded.training_forward_pass(step_input(x, step=0))  # must not re-initialise from data
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(sae, name)), name


# ---------------------------------------------------------------- registration


def test_register_is_idempotent() -> None:
    bae_lens.register()
    bae_lens.register()
    assert SAE_CLASS_REGISTRY["bae"] == (BinaryAutoencoder, BinaryAutoencoderConfig)
    assert SAE_TRAINING_CLASS_REGISTRY["bae"] == (
        BinaryAutoencoderTraining,
        BinaryAutoencoderTrainingConfig,
    )


def test_register_refuses_a_different_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SAE_CLASS_REGISTRY, "bae", (StandardSAE, BinaryAutoencoderConfig))
    with pytest.raises(ValueError) as info:
        bae_lens.register()
    message = str(info.value)
    assert "sae_lens.saes.standard_sae.StandardSAE" in message
    assert "bae_lens.bae.BinaryAutoencoder" in message
    assert "'bae'" in message


def test_register_refuses_a_different_training_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        SAE_TRAINING_CLASS_REGISTRY, "bae", (StandardTrainingSAE, BinaryAutoencoderTrainingConfig)
    )
    with pytest.raises(ValueError, match="StandardTrainingSAE.*BinaryAutoencoderTraining"):
        bae_lens.register()


def test_register_restores_a_missing_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(SAE_CLASS_REGISTRY, "bae")
    monkeypatch.delitem(SAE_TRAINING_CLASS_REGISTRY, "bae")
    bae_lens.register()
    assert SAE_CLASS_REGISTRY["bae"][0] is BinaryAutoencoder
    assert SAE_TRAINING_CLASS_REGISTRY["bae"][0] is BinaryAutoencoderTraining


# ---------------------------------------------------------------- folding


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_fold_W_dec_norm_is_refused(cls: str) -> None:
    sae: Any = make_inference() if cls == "inference" else make_training()
    with pytest.raises(ValueError, match="fold_W_dec_norm"):
        sae.fold_W_dec_norm()


def test_load_with_fold_W_dec_norm_is_refused(tmp_path: Path) -> None:
    randomize(make_inference()).save_model(tmp_path)
    with pytest.raises(ValueError, match="fold_W_dec_norm"):
        SAE.load_from_disk(tmp_path, fold_W_dec_norm=True)
    assert isinstance(SAE.load_from_disk(tmp_path), BinaryAutoencoder)


@pytest.mark.parametrize("cls", ["inference", "training"])
@pytest.mark.parametrize("output_activation", ["identity", "relu"])
@pytest.mark.parametrize("k", [1, 3])
def test_fold_activation_norm_scaling_factor_keeps_outputs(
    cls: str, output_activation: str, k: int
) -> None:
    """Trained on s * x: the folded SAE maps raw x to the original output / s."""
    s = 2.5
    make = make_inference if cls == "inference" else make_training
    sae: Any = randomize(make(bits_per_feature=k, output_activation=output_activation))
    x = _randn(50, 4, seed=11)
    with torch.no_grad():
        expected_code = sae.encode(s * x)
        expected = sae(s * x) / s
        sae.fold_activation_norm_scaling_factor(s)
        assert torch.equal(sae.encode(x), expected_code)
        torch.testing.assert_close(sae(x), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- validation

BAD_CONFIGS: list[tuple[str, Any, dict[str, Any]]] = [
    ("estimator", "tanh", {}),
    ("covariance_penalty", "l1", {}),
    ("entropy_reduction", "max", {}),
    ("covariance_reduction", "avg", {}),
    ("entropy_coefficient", -1.0, {}),
    ("covariance_coefficient", -0.5, {}),
    ("entropy_threshold", -2.0, {}),
    ("entropy_warm_up_steps", -1, {}),
    ("entropy_start_step", -3, {}),
    ("covariance_warm_up_steps", -2, {}),
    ("l0_warm_up_steps", -5, {}),
    ("bits_per_feature", 0, {}),
    ("bits_per_feature", 1.5, {}),
    ("d_sae", 0, {}),
    ("d_in", -4, {}),
    ("estimator_temperature", 0.0, {}),
    ("estimator_temperature", -1.0, {}),
    ("square_wave_period", 0.0, {}),
    ("init_firing_rate", 1.5, {}),
    ("init_firing_rate", 0.0, {}),
    ("covariance_chunk_size", 0, {}),
    ("log_every", 0, {}),
    ("binarization", "square_wave", {"estimator": "sigmoid"}),
    ("binarization", "sine", {}),
    ("output_activation", "gelu", {}),
    ("reshape_activations", "hook_z", {}),
]


@pytest.mark.parametrize(
    ("field", "value", "extra"), BAD_CONFIGS, ids=[f"{f}={v!r}" for f, v, _ in BAD_CONFIGS]
)
def test_bad_training_config_raises(field: str, value: Any, extra: dict[str, Any]) -> None:
    kwargs = {"d_in": 4, "d_sae": 6, **extra, field: value}
    with pytest.raises(ValueError) as info:
        BinaryAutoencoderTrainingConfig(**kwargs)
    message = str(info.value)
    assert field in message and repr(value) in message, message


BAD_INFERENCE_CONFIGS: list[tuple[str, Any]] = [
    ("bits_per_feature", 0),
    ("d_sae", 0),
    ("d_in", 0),
    ("binarization", "sine"),
    ("square_wave_period", -1.0),
    ("output_activation", "gelu"),
    ("reshape_activations", "hook_z"),
]


@pytest.mark.parametrize(("field", "value"), BAD_INFERENCE_CONFIGS)
def test_bad_inference_config_raises(field: str, value: Any) -> None:
    kwargs = {"d_in": 4, "d_sae": 6, field: value}
    with pytest.raises(ValueError) as info:
        BinaryAutoencoderConfig(**kwargs)
    message = str(info.value)
    assert field in message and repr(value) in message, message


def test_unknown_choice_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"\['identity', 'sigmoid', 'reference', 'square_wave'\]"):
        BinaryAutoencoderTrainingConfig(d_in=4, d_sae=6, estimator="tanh")


def test_square_wave_estimator_sets_binarization() -> None:
    cfg = BinaryAutoencoderTrainingConfig(d_in=4, d_sae=6, estimator="square_wave")
    assert cfg.binarization == "square_wave"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_wrong_d_in_at_encode(cls: str) -> None:
    sae: Any = make_inference(d_in=4) if cls == "inference" else make_training(d_in=4)
    x = torch.zeros(5, 3)
    for fn in (sae.encode, sae.forward, sae.encode_bits):
        with pytest.raises(ValueError, match=r"\(5, 3\).*d_in=4"):
            fn(x)


@pytest.mark.parametrize("cls", ["inference", "training"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_at_encode(cls: str, bad: float) -> None:
    sae: Any = make_inference(d_in=4) if cls == "inference" else make_training(d_in=4)
    x = torch.zeros(2, 3, 4)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*1 non-finite"):
        sae.encode(x)


def test_bad_input_in_training_pass() -> None:
    sae = make_training(d_in=4, init_firing_rate=0.1)
    with pytest.raises(ValueError, match="d_in=4"):
        sae.training_forward_pass(step_input(torch.zeros(8, 5)))
    x = _randn(8, 4)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sae.training_forward_pass(step_input(x))


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_fold_activation_whitening_keeps_outputs(cls: str) -> None:
    """Trained on (x - mean) @ M: the folded SAE maps raw x to out @ M^-1 + mean."""
    make = make_inference if cls == "inference" else make_training
    sae: Any = randomize(make(dtype="float64"))
    gen = torch.Generator().manual_seed(5)
    mean = torch.randn(4, generator=gen, dtype=torch.float64)
    matrix = torch.randn(4, 4, generator=gen, dtype=torch.float64) + 3 * torch.eye(4)
    inverse = torch.linalg.inv(matrix)
    x = _randn(50, 4, seed=12).double()
    with torch.no_grad():
        whitened = (x - mean) @ matrix
        expected_code = sae.encode(whitened)
        expected = sae(whitened) @ inverse + mean
        sae.fold_activation_whitening(mean, matrix, inverse)
        assert torch.equal(sae.encode(x), expected_code)
        torch.testing.assert_close(sae(x), expected)


@pytest.mark.parametrize("output_activation", ["tanh", "sigmoid"])
def test_fold_refused_for_nonlinear_output_activation(output_activation: str) -> None:
    sae = randomize(make_inference(output_activation=output_activation))
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    with pytest.raises(ValueError, match=f"output_activation='{output_activation}'"):
        sae.fold_activation_norm_scaling_factor(2.0)
    with pytest.raises(ValueError, match=f"output_activation='{output_activation}'"):
        sae.fold_activation_whitening(torch.zeros(4), torch.eye(4), torch.eye(4))
    for name, param in sae.named_parameters():
        assert torch.equal(param, before[name]), name  # nothing was half-folded
    relu = randomize(make_inference(output_activation="relu"))
    with pytest.raises(ValueError, match="output_activation='relu'"):
        relu.fold_activation_whitening(torch.zeros(4), torch.eye(4), torch.eye(4))


@pytest.mark.parametrize("cls", ["inference", "training"])
def test_fold_refusal_is_what_downstream_loaders_catch(cls: str) -> None:
    """SAELens raises NotImplementedError for a fold an architecture cannot do, and
    SAEBench's loader catches exactly that and goes on unfolded."""
    sae: Any = make_inference() if cls == "inference" else make_training()
    before = sae.W_dec.detach().clone()
    try:
        sae.fold_W_dec_norm()
        folded = True
    except NotImplementedError:
        folded = False
    assert not folded and torch.equal(sae.W_dec, before)


def test_integer_activations_are_refused_at_encode() -> None:
    sae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=4, d_sae=8))
    with pytest.raises(ValueError, match="dtype torch.int64: activations must be floating point"):
        sae.encode(torch.arange(8).reshape(2, 4))
    assert sae.encode(torch.randn(2, 4).half()).shape == (2, 8)  # half is cast, as before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entropy_coefficient", math.inf),
        ("covariance_coefficient", math.nan),
        ("b_enc_init", math.nan),
        ("estimator_temperature", math.inf),
    ],  # fmt: skip
)
def test_non_finite_training_options_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field}=.* must be a finite number"):
        BinaryAutoencoderTrainingConfig(d_in=4, d_sae=8, **{field: value})


# ---------------------------------------------------------------- majority-bit flip


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
@pytest.mark.parametrize("estimator", ["sigmoid", "square_wave"])
@pytest.mark.parametrize("cls", ["inference", "training"])
def test_flip_bits_keeps_reconstructions_and_flips_the_code(
    apply_b_dec_to_input: bool, estimator: str, cls: str
) -> None:
    options: dict[str, Any] = {"apply_b_dec_to_input": apply_b_dec_to_input}
    if estimator == "square_wave":
        options["binarization"] = "square_wave"
        if cls == "training":
            options["estimator"] = "square_wave"
    make = make_inference if cls == "inference" else make_training
    sae = randomize(make(d_in=5, d_sae=7, **options))
    x = _randn(300, 5) * 3
    with torch.no_grad():
        bits, recon = sae.encode_bits(x), sae.decode(sae.encode(x))
    mask = torch.tensor([True, False, True, True, False, False, True])
    assert sae.flip_bits_(mask) == 4
    with torch.no_grad():
        bits_after, recon_after = sae.encode_bits(x), sae.decode(sae.encode(x))
    torch.testing.assert_close(recon_after, recon, atol=1e-4, rtol=1e-4)
    assert torch.equal(bits_after[:, mask], 1 - bits[:, mask])
    assert torch.equal(bits_after[:, ~mask], bits[:, ~mask])


def test_flip_bits_refuses_more_bit_features_and_wrong_masks() -> None:
    with pytest.raises(ValueError, match="one bit"):
        make_inference(bits_per_feature=2).flip_bits_(torch.zeros(12, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        make_inference().flip_bits_(torch.zeros(5, dtype=torch.bool))


@pytest.mark.parametrize("flip", [True, False])
def test_inference_save_flips_majority_bits(tmp_path: Path, flip: bool) -> None:
    sae = randomize(make_training(d_in=5, d_sae=8, flip_majority_bits=flip))
    with torch.no_grad():
        sae.b_enc[:3] = 50.0  # three bits on for every input
        sae.b_enc[3:] = -50.0
        sae.b_enc[7] = 0.0
    x = _randn(64, 5)
    sae.training_forward_pass(step_input(x))  # step 0: logged (log_every 10)
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    sae.save_inference_model(tmp_path / "bae")
    loaded = SAE.load_from_disk(tmp_path / "bae")
    with torch.no_grad():
        rates = loaded.encode(x).mean(0)
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), recon, atol=1e-4, rtol=1e-4)
    if flip:
        assert float(rates.max()) <= 0.5
        assert torch.equal(rates[:3], torch.zeros(3))
        assert sae.training_log[-1]["flipped_bits"] == 3.0
    else:
        assert torch.equal(rates[:3], torch.ones(3))


def test_l0_price_is_coefficient_times_ones_per_token_with_estimator_gradient() -> None:
    sae = randomize(make_training(l0_coefficient=0.5))
    x = _randn(40, 4)
    inp = step_input(x)
    inp.coefficients["l0"] = 0.5
    out = sae.training_forward_pass(inp)
    ones = sae.encode_bits(x).sum(1).mean()
    torch.testing.assert_close(out.losses["l0_loss"].detach(), 0.5 * ones)
    out.losses["l0_loss"].backward()
    assert sae.b_enc.grad is not None and float(sae.b_enc.grad.abs().sum()) > 0
    assert float(sae.b_enc.grad.min()) >= 0  # every firing is charged: biases pushed down
    assert sae.get_coefficients()["l0"].value == 0.5
    with pytest.raises(ValueError, match="l0_coefficient"):
        make_training(l0_coefficient=-1.0)


def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path: Path) -> None:
    sae = randomize(make_training(entropy_coefficient=0.1))
    with torch.no_grad():
        sae.W_dec[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"step 7: the loss is not finite \(mse_loss"):
        sae.training_forward_pass(step_input(_randn(16, 4), step=7, entropy=0.1))
