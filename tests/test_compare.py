"""`bae-lens compare` end to end on a tiny random model: every dictionary, table, plot."""

from __future__ import annotations

import json
from dataclasses import fields
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens.cli import main
from bae_lens.compare import (
    DICTIONARIES,
    CompareSettings,
    check_dictionaries,
    run_compare,
    transcoder_hooks,
)

CTX = 32


@pytest.fixture(scope="module")
def model(tiny_config: HookedTransformerConfig) -> HookedTransformer:
    torch.manual_seed(0)
    cfg = tiny_config
    return HookedTransformer(cfg).eval()


def _settings(**kw) -> CompareSettings:
    base = dict(
        hook="blocks.0.hook_resid_post",
        expansion=2,
        training_tokens=512,
        batch_tokens=128,
        context_size=CTX,
        k=4,
        n_batches_for_norm_estimate=2,
        exclude_special_tokens=False,
    )
    return CompareSettings(**(base | kw))


def test_compare_writes_table_json_and_plot(tmp_path, model):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (48, CTX), generator=gen)
    ids[:, 0] = 0
    train = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    out = tmp_path / "out"
    payload = run_compare(
        model,
        train,
        ids[:8],
        list(DICTIONARIES),
        _settings(),
        tmp_path / "w",
        out,
        eval_batch_size=4,
    )
    table = (out / "compare.md").read_text()
    for name in DICTIONARIES:
        assert f"| {name} |" in table
    assert (out / "l0_vs_ce.png").stat().st_size > 0
    saved = json.loads((out / "compare.json").read_text())
    assert set(saved["results"]) == set(DICTIONARIES)
    assert saved["results"]["transcoder_bae"]["hook_name"] == "blocks.0.hook_mlp_out"
    assert saved["results"]["topk"]["l0"] == pytest.approx(4.0)
    assert not (tmp_path / "w" / "activations").exists()  # cache removed by default
    assert "torch" in payload["environment"]
    stages = payload["stages"]
    assert {f"train {n}" for n in DICTIONARIES} | {"cache activations"} <= set(stages)
    assert (
        stages["eval: spliced pass"]["tokens"]
        == len(DICTIONARIES) * stages["eval: clean pass"]["tokens"]
    )
    # reuse: nothing to train, so no cache and no training timings
    again = run_compare(
        model,
        train,
        ids[:8],
        ["bae", "topk"],
        _settings(),
        tmp_path / "w",
        tmp_path / "out2",
        reuse=True,
        eval_batch_size=4,
    )
    assert {n for n in again["stages"] if not n.startswith("eval: ")} == set()
    assert again["results"]["bae"]["l0"] == pytest.approx(saved["results"]["bae"]["l0"])


def test_transcoders_train_with_their_own_coefficients(tmp_path, monkeypatch):
    """The transcoder's losses are means over tokens (entropy "mean" reduction), the BAE's
    a sum over d_in and per bit: the main job's BAE coefficients are in other units, so
    compare hands each transcoder its own defaults (and the shared l1_coefficient)."""
    import bae_lens.compare as compare
    from bae_lens.main_job import MAIN_JOB_DEFAULTS
    from bae_lens.transcoders import TranscoderTraining, TranscoderTrainingConfig

    trained: dict[str, TranscoderTrainingConfig] = {}
    monkeypatch.setattr(
        compare, "train_transcoder", lambda _m, cfg, *_a, **_k: trained.setdefault(cfg.code, cfg)
    )
    model = SimpleNamespace(cfg=SimpleNamespace(d_model=8))
    settings = _settings(l1_coefficient=2.5)
    for name in ("transcoder_bae", "transcoder_relu"):
        compare.train_dictionary(name, model, None, tmp_path, tmp_path / name, settings)
    own = {f.name: f.default for f in fields(TranscoderTrainingConfig)}
    binary = trained["binary"]
    for coefficient in ("entropy_coefficient", "covariance_coefficient"):
        assert getattr(binary, coefficient) == own[coefficient], coefficient
        assert getattr(binary, coefficient) != MAIN_JOB_DEFAULTS[coefficient], coefficient
    assert not hasattr(binary, "l0_coefficient")  # the BAE's price per firing is not passed
    assert TranscoderTraining(binary).get_coefficients() == {  # what its trainer schedules
        "entropy": own["entropy_coefficient"],
        "covariance": own["covariance_coefficient"],
    }
    assert trained["relu"].l1_coefficient == 2.5


def test_bad_inputs(tmp_path, model):
    with pytest.raises(ValueError, match="unknown \\['sae9'\\]"):
        check_dictionaries(["bae", "sae9"])
    with pytest.raises(ValueError, match="hook='hook_embed' names no block"):
        transcoder_hooks("hook_embed")
    with pytest.raises(ValueError, match="blocks.4.hook_resid_post"):
        run_compare(
            model,
            None,
            torch.zeros(8, CTX, dtype=torch.long),
            ["bae"],
            _settings(hook="blocks.4.hook_resid_post"),
            tmp_path,
            tmp_path,
        )


def test_cli_rejects_unknown_dictionary(capsys):
    assert main(["compare", "--dictionaries", "bae,nope"]) == 2
    assert "nope" in capsys.readouterr().err
