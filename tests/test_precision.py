"""One device and dtype policy (:mod:`bae_lens.runtime`), and a half-precision BAE whose
0/1 decision is taken on a float32 pre-activation (:meth:`_BinaryEncoding.hidden_pre`)."""

from __future__ import annotations

import argparse
import importlib

import pytest
import torch

from bae_lens.bae import BinaryAutoencoderTraining
from bae_lens.bae import BinaryAutoencoderTrainingConfig as TrainCfg
from bae_lens.cli import SUBCOMMANDS
from bae_lens.runtime import resolve_device, resolve_dtype

D_IN = 576  # the embedded model's d_model
RESIDUAL_SCALE = 4.0  # |x| ~ 96, the order of a middle residual stream of the embedded model


def _bae_pair(
    init_firing_rate: float | None, **options: object
) -> tuple[BinaryAutoencoderTraining, BinaryAutoencoderTraining, torch.Tensor]:
    """A float32 BAE with random weights (data-dependent start when a rate is given), the
    same BAE cast to bfloat16, and inputs ~ N(0, 1) scaled like a residual stream."""
    torch.manual_seed(0)
    cfg = TrainCfg(d_in=D_IN, d_sae=4 * D_IN, init_firing_rate=init_firing_rate, **options)
    fp32 = BinaryAutoencoderTraining(cfg)
    x = torch.randn(2048, D_IN) * RESIDUAL_SCALE
    if init_firing_rate is not None:
        fp32.initialize_from_batch(x)
    bf16 = BinaryAutoencoderTraining(cfg)
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16.to(torch.bfloat16), x


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() == b.float()).float().mean())


@pytest.mark.parametrize("init_firing_rate", [None, 0.05], ids=["b_enc=0", "data start 5%"])
def test_a_bf16_bae_code_agrees_with_its_fp32_code(init_firing_rate: float | None) -> None:
    fp32, bf16, x = _bae_pair(init_firing_rate)
    with torch.no_grad():
        agreement = _agreement(bf16.encode_bits(x), fp32.encode_bits(x))
    assert agreement >= 0.999, agreement


def test_the_float32_decision_keeps_bits_a_half_precision_z_flips() -> None:
    """The square wave reads z itself, not only its sign: a bf16 z (8 mantissa bits) moves
    many bits across a half-period edge; the float32 z keeps most of them."""
    fp32, bf16, x = _bae_pair(0.05, binarization="square_wave", estimator="square_wave")
    with torch.no_grad():
        reference = fp32.encode_bits(x)
        float32_decision = _agreement(bf16.encode_bits(x), reference)
        sae_in = bf16.process_sae_in(x)
        half_z = sae_in @ bf16.W_enc + bf16.b_enc  # what bf16 arithmetic alone gives
        half_decision = _agreement(bf16.code(half_z), reference)
    assert half_z.dtype == torch.bfloat16
    assert float32_decision > half_decision + 0.001, (float32_decision, half_decision)


def test_a_bf16_bae_computes_z_in_float32_and_returns_its_own_dtype() -> None:
    _, bf16, x = _bae_pair(None)
    x = x[:64].bfloat16()
    assert bf16.hidden_pre(x).dtype == torch.float32
    assert bf16.encode(x).dtype == torch.bfloat16
    assert bf16.encode_bits(x).dtype == torch.bfloat16
    out = bf16(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_under_autocast_a_float32_bae_keeps_its_float32_code() -> None:
    fp32, _, x = _bae_pair(0.05)
    with torch.no_grad():
        reference = fp32.encode_bits(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert (sae_in := fp32.process_sae_in(x) @ fp32.W_enc).dtype == torch.bfloat16
            under_autocast = fp32.encode_bits(x)
    assert sae_in.shape[-1] == fp32.n_bits
    assert torch.equal(under_autocast, reference)


def test_a_bf16_bae_training_step_is_finite_and_reaches_the_encoder() -> None:
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    sae = BinaryAutoencoderTraining(TrainCfg(d_in=16, d_sae=32, dtype="bfloat16"))
    assert sae.W_enc.dtype == torch.bfloat16
    coefficients = {"entropy": 0.05, "covariance": 1.0, "l0": 0.1}
    step = TrainStepInput(torch.randn(64, 16) * 4, coefficients, None, 0, False)
    output = sae.training_forward_pass(step)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert sae.W_enc.grad is not None and sae.W_enc.grad.dtype == torch.bfloat16
    assert float(sae.W_enc.grad.float().abs().sum()) > 0


# --------------------------------------------------------------------------- the policy


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_dtype_names_are_saelens_strings() -> None:
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match=r"--dtype float64: not a supported dtype \(float32, "):
        resolve_dtype("float64")


RUNS_A_MODEL_OR_SAE = ("train", "eval", "compare", "frontier", "entropy", "comsem")


@pytest.mark.parametrize("command", RUNS_A_MODEL_OR_SAE)
def test_every_subcommand_has_the_same_device_dtype_and_threads(command: str) -> None:
    module = next(m for name, _, m in SUBCOMMANDS if name == command)
    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    extra = ["{tmp}/bae"] if command in ("eval",) else []
    args = parser.parse_args(extra)
    assert (args.device, args.dtype, args.threads) == ("auto", "float32", None)


def test_dtype_reaches_every_trained_dictionary_config(tmp_path: object) -> None:
    """--dtype flows to the main job's settings and to the configs that compare and frontier
    train (the BAE, a SAELens baseline, the random control, the transcoder)."""
    from pathlib import Path

    from bae_lens.cli import train as train_cli
    from bae_lens.compare import CompareSettings, _sae_config, _transcoder_config
    from bae_lens.frontier import FrontierSettings, Point, point_config

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    settings = train_cli.settings_from_args(parser.parse_args(["--dtype", "bfloat16"]))
    assert settings.dtype == "bfloat16"
    compare = CompareSettings(hook="blocks.0.hook_resid_post", dtype="bfloat16")
    folder = Path(str(tmp_path))
    for name in ("bae", "topk", "random_bae"):
        assert _sae_config(name, 8, compare, folder).dtype == "bfloat16", name
    assert _transcoder_config("transcoder_bae", 8, compare).dtype == "bfloat16"
    frontier = FrontierSettings(hook="blocks.0.hook_resid_post", model_name="m", dtype="float16")
    for arch, setting in (("bae", 0.1), ("topk", 8.0), ("random_bae", 0.1)):
        point = Point(arch, setting)
        assert point_config(point, 8, frontier, 0.05).dtype == "float16", arch
