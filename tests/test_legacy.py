"""Importing the released code's files: identical outputs, and pickles never run code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.storage
from sae_lens import SAE

from bae_lens.cli import main as cli_main
from bae_lens.legacy import (
    IMPORT_INFO_FILENAME,
    convert_legacy_state_dict,
    import_legacy_model,
    load_legacy_hidden_states,
    load_legacy_params,
    save_legacy_import,
)
from bae_lens.safe_pickle import UnsafePickleError, safe_load, safe_loads

D, RATE = 8, 4


class _ReleasedBAE(torch.nn.Module):
    """The released BinarizedAutoencoder's forward (module/binarized_autoencoder.py)."""

    def __init__(self, binarization: str, output_activation: str, bias: bool):
        super().__init__()
        self.encoder = torch.nn.Linear(D, RATE * D)
        self.decoder = torch.nn.Linear(RATE * D, D, bias=bias)
        self.binarization = binarization
        self.out = {"none": lambda y: y, "tanh": torch.tanh, "relu": torch.relu}[output_activation]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        # the released square wave is 1[(z mod 2) < 1] whatever cycle_for_squarewave says
        h = (z % 2 < 1) if self.binarization == "squarewave" else (z > 0)
        h = h.to(z.dtype)
        return self.out(self.decoder(h)), h


def _write_release(tmp: Path, binarization: str, out_act: str, bias: bool) -> _ReleasedBAE:
    torch.manual_seed(0)
    model = _ReleasedBAE(binarization, out_act, bias)
    torch.save(model.state_dict(), tmp / "model.pt")
    params = {
        "inner_expand_rate": RATE,
        "binarization_type": binarization,
        "cycle_for_squarewave": 2,
        "output_activation": out_act,
        "entropy_weight": 0.1,
        "covarience_weight": 0.01,
        "entropy_threshold": 0.0,
        "entropy_start_epoch": 500,
    }
    log = {"log": {"train_loss_log": [np.float64(1.5), 1.2]}, "params": params}
    with open(tmp / "log.pkl", "wb") as f:
        pickle.dump(log, f)
    return model


@pytest.mark.parametrize(
    ("binarization", "out_act", "bias", "estimator"),
    [
        ("sign", "none", True, "identity"),
        ("sign_s", "tanh", False, "sigmoid"),
        ("squarewave", "relu", True, "square_wave"),
    ],
)
def test_converted_model_matches_released_forward(
    tmp_path: Path, binarization: str, out_act: str, bias: bool, estimator: str
) -> None:
    released = _write_release(tmp_path, binarization, out_act, bias)
    result = import_legacy_model(tmp_path / "model.pt", tmp_path / "log.pkl")
    assert result.training_options["estimator"] == estimator
    assert result.training_options["entropy_coefficient"] == 0.1
    assert result.sae.cfg.apply_b_dec_to_input is False
    save_legacy_import(result, tmp_path / "out")
    loaded = SAE.load_from_disk(tmp_path / "out")
    x = torch.randn(64, D) * 2
    expected_y, expected_h = released(x)
    for sae in (result.sae, loaded):
        with torch.no_grad():
            torch.testing.assert_close(sae.encode(x), expected_h, atol=0, rtol=0)
            torch.testing.assert_close(sae(x), expected_y, atol=1e-6, rtol=1e-6)
    info = json.loads((tmp_path / "out" / IMPORT_INFO_FILENAME).read_text())
    assert info["released_params"]["binarization_type"] == binarization


def test_hidden_state_pickles_flat_and_layered(tmp_path: Path) -> None:
    flat = [torch.randn(D) for _ in range(5)]
    layered = [[torch.randn(D) for _ in range(3)] for _ in range(2)]
    with open(tmp_path / "flat.pkl", "wb") as f:
        pickle.dump(flat, f)
    with open(tmp_path / "layered.pkl", "wb") as f:
        pickle.dump(layered, f)
    torch.testing.assert_close(load_legacy_hidden_states(tmp_path / "flat.pkl"), torch.stack(flat))
    got = load_legacy_hidden_states(tmp_path / "layered.pkl", layer=-1)
    torch.testing.assert_close(got, torch.stack(layered[-1]))
    with pytest.raises(ValueError, match="layer="):
        load_legacy_hidden_states(tmp_path / "layered.pkl")


def test_cli_import_legacy_writes_sae_and_activations(tmp_path: Path) -> None:
    _write_release(tmp_path, "sign", "none", True)
    with open(tmp_path / "h.pkl", "wb") as f:
        pickle.dump([torch.randn(D) for _ in range(7)], f)
    code = cli_main(
        [
            "import-legacy",
            "--model",
            str(tmp_path / "model.pt"),
            "--params",
            str(tmp_path / "log.pkl"),
            "--hidden-states",
            str(tmp_path / "h.pkl"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    from bae_lens.distributed import load_activations

    assert load_activations(tmp_path / "out" / "activations.safetensors").shape == (7, D)
    assert SAE.load_from_disk(tmp_path / "out").cfg.d_sae == RATE * D


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = {
        "top-level": pickle.dumps(_Exploit(marker)),
        "nested in params": pickle.dumps({"params": {"lr": _Exploit(marker)}}),
        "in a tensor list": pickle.dumps([torch.zeros(2), _Exploit(marker)]),
    }
    for name, payload in payloads.items():
        (tmp_path / "x.pkl").write_bytes(payload)
        with pytest.raises(UnsafePickleError, match="system"):
            safe_load(tmp_path / "x.pkl")
        with pytest.raises(ValueError, match="system"):
            load_legacy_params(tmp_path / "x.pkl")
        assert not marker.exists(), name
    # code hidden inside a tensor's storage bytes goes through torch's weights-only loader
    inner = pickle.dumps(_Exploit(marker))
    smuggled = pickle.dumps(_StorageSmuggler(inner))
    with pytest.raises(ValueError):
        safe_loads(smuggled)
    assert not marker.exists()
    # a malicious .pt model file is refused by torch.load(weights_only=True)
    torch.save({"encoder.weight": _Exploit(marker)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="weights-only"):
        import_legacy_model(tmp_path / "bad.pt")
    assert not marker.exists()
    assert torch.storage._load_from_bytes is not None  # the real one was never called


class _StorageSmuggler:
    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return (torch.storage._load_from_bytes, (self.data,))


def test_convert_rejects_wrong_state_dicts() -> None:
    good = {
        "encoder.weight": torch.zeros(RATE * D, D),
        "encoder.bias": torch.zeros(RATE * D),
        "decoder.weight": torch.zeros(D, RATE * D),
    }
    with pytest.raises(ValueError, match="decoder.weight has shape"):
        convert_legacy_state_dict({**good, "decoder.weight": torch.zeros(D, 3)})
    with pytest.raises(ValueError, match="unexpected"):
        convert_legacy_state_dict({**good, "W_enc": torch.zeros(1)})
    with pytest.raises(ValueError, match="inner_expand_rate=2"):
        convert_legacy_state_dict(good, {"inner_expand_rate": 2})
    with pytest.raises(ValueError, match="binarization_type='ternary'"):
        convert_legacy_state_dict(good, {"binarization_type": "ternary"})
