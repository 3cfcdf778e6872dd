"""Splice-in metrics on hand-built dictionaries with known answers (tiny random model)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

import bae_lens
from bae_lens.cli import main
from bae_lens.evaluate import evaluate_sae, evaluate_saes
from bae_lens.splice_metrics import (
    SpliceMetrics,
    code_statistics,
    metrics_table,
    plot_firing_rates,
    write_results,
)

HOOK = "blocks.0.hook_resid_post"
D = 32


@pytest.fixture(scope="module")
def model(tiny_config: HookedTransformerConfig) -> HookedTransformer:
    torch.manual_seed(0)
    cfg = tiny_config
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    toks = torch.randint(1, 50, (8, 16), generator=gen)
    toks[:, 0] = 0
    return toks


def _standard(w_enc: torch.Tensor, w_dec: torch.Tensor, hook: str = HOOK) -> StandardSAE:
    d_in, d_sae = w_enc.shape
    cfg = StandardSAEConfig(
        d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=False, metadata=SAEMetadata(hook_name=hook)
    )
    sae = StandardSAE(cfg)
    sae.load_state_dict(
        {"W_enc": w_enc, "W_dec": w_dec, "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d_in)}
    )
    return sae


def identity_sae() -> StandardSAE:
    """relu(x) - relu(-x) = x: an exact identity with a ReLU code of width 2 d_in."""
    eye = torch.eye(D)
    return _standard(torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0))


def zero_sae() -> StandardSAE:
    return _standard(torch.eye(D), torch.zeros(D, D))


def test_identity_recovers_everything(model, tokens):
    m = evaluate_sae(model, identity_sae(), tokens, batch_size=4)
    assert m.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert m.kl_spliced == pytest.approx(0.0, abs=1e-6)
    assert m.kl_score == pytest.approx(1.0, abs=1e-5)
    assert m.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert m.mse == pytest.approx(0.0, abs=1e-8)
    assert m.n_tokens == 8 * 15  # BOS excluded
    # every coordinate is nonzero with one sign: exactly d_in of the 2 d_in features fire
    assert m.l0 == pytest.approx(D)
    assert m.n_dead == 0 and m.n_features == 2 * D


def test_zero_output_recovers_nothing(model, tokens):
    m = evaluate_sae(model, zero_sae(), tokens, batch_size=4)
    assert m.ce_spliced == pytest.approx(m.ce_zero_ablation, abs=1e-5)
    assert m.ce_loss_recovered == pytest.approx(0.0, abs=1e-4)
    assert m.kl_score == pytest.approx(0.0, abs=1e-5)
    # EV of x^ = 0 is 1 - E||y||^2 / Var(y) <= 0
    assert m.explained_variance <= 0.0


def test_shared_passes_match_single_evaluation(model, tokens):
    both = evaluate_saes(model, {"id": identity_sae(), "zero": zero_sae()}, tokens, 4)
    alone = evaluate_sae(model, zero_sae(), tokens, batch_size=4)
    for key in ("ce_clean", "ce_spliced", "ce_zero_ablation", "kl_spliced", "mse", "l0"):
        assert getattr(both["zero"], key) == pytest.approx(getattr(alone, key), rel=1e-5)
    assert both["id"].ce_clean == both["zero"].ce_clean


def test_code_statistics_hand_built():
    # 4 tokens x 5 features: never, always, 1/4, 2/4, 3/4
    code = torch.tensor(
        [[0, 1, 1, 1, 1], [0, 1, 0, 1, 1], [0, 1, 0, 0, 1], [0, 1, 0, 0, 0]], dtype=torch.float
    )
    stats = code_statistics(code.sum(0) / 4)
    hb = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert stats["l0"] == pytest.approx(2.5)
    assert stats["burst_l0"] == pytest.approx(1.0)
    assert stats["entropy_bits"] == pytest.approx(1.0 + 2 * hb)
    assert stats["n_dead"] == 1 and stats["n_always_on"] == 1
    assert stats["n_dense"] == {"0.01": 4, "0.1": 4, "0.5": 2}


def test_binary_code_statistics_use_raw_bits(model, tokens):
    """A BAE's firing rates are those of encode_bits on the hook's activations."""
    from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig

    torch.manual_seed(3)
    bae = BinaryAutoencoder(
        BinaryAutoencoderConfig(d_in=D, d_sae=48, metadata=SAEMetadata(hook_name=HOOK))
    )
    m = evaluate_sae(model, bae, tokens, batch_size=4)
    _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
    bits = bae.encode_bits(cache[HOOK][:, 1:].flatten(0, 1))
    rates = bits.mean(0)
    assert m.firing_rates == pytest.approx(rates.tolist(), abs=1e-6)
    assert m.l0 == pytest.approx(float(bits.sum(1).mean()), rel=1e-5)
    assert m.burst_l0 == pytest.approx(float(torch.minimum(rates, 1 - rates).sum()), rel=1e-5)


def test_bad_inputs_name_the_value(model, tokens):
    with pytest.raises(ValueError, match="blocks.9.hook_resid_post"):
        evaluate_sae(model, identity_sae(), tokens, hook_name="blocks.9.hook_resid_post")
    wrong = _standard(torch.eye(D + 1), torch.eye(D + 1))
    with pytest.raises(ValueError, match=r"d_in=33 does not match hook 'blocks.0.hook_resid_post'"):
        evaluate_sae(model, wrong, tokens, batch_size=4)
    with pytest.raises(
        ValueError, match=r"has 8 sequences, fewer than one batch \(batch_size=16\)"
    ):
        evaluate_sae(model, identity_sae(), tokens, batch_size=16)
    with pytest.raises(ValueError, match="need"):
        evaluate_sae(model, identity_sae(), tokens[:, :1], batch_size=1)


def test_table_json_and_plot(tmp_path, model, tokens):
    results = evaluate_saes(model, {"id": identity_sae(), "zero": zero_sae()}, tokens, 4)
    table = metrics_table(results)
    assert table.count("\n") == 3 and "| id |" in table and "| zero |" in table
    write_results(results, tmp_path, {"note": "test"})
    payload = json.loads((tmp_path / "eval.json").read_text())
    assert len(payload["results"]["id"]["firing_rates"]) == 2 * D
    assert (tmp_path / "firing_rates_zero.png").stat().st_size > 0
    plot_firing_rates(results["id"], str(tmp_path / "h.png"), title="id")
    assert isinstance(results["id"], SpliceMetrics)


def test_saved_sae_round_trip(tmp_path, model, tokens):
    sae = identity_sae()
    sae.save_model(tmp_path / "id")
    loaded = SAE.load_from_disk(tmp_path / "id")
    assert evaluate_sae(model, loaded, tokens, batch_size=8).ce_loss_recovered == pytest.approx(
        1.0, abs=1e-4
    )
    assert bae_lens.__version__


def test_cli_eval_rejects_missing_folder(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert f"saes {tmp_path / 'nope'}: not a usable saved dictionary" in capsys.readouterr().err


def test_massive_activations_are_left_clean_and_uncounted() -> None:
    from bae_lens.evaluate import _clean_positions

    acts = torch.ones(2, 5, 3)
    acts[1, 2] *= 500.0  # a massive activation mid-sequence
    mask = _clean_positions(acts, 10.0)
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[:, 0] = True  # BOS always
    expected[1, 2] = True
    assert torch.equal(mask, expected)
    assert torch.equal(_clean_positions(acts, None), expected & (torch.arange(5) == 0))


@pytest.mark.parametrize("positional", ["standard", "rotary"])
@pytest.mark.parametrize(
    "hook", ["blocks.1.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"]
)
def test_passes_started_at_the_hook_block_match_full_forwards(
    tiny_config: HookedTransformerConfig, tokens: torch.Tensor, hook: str, positional: str
) -> None:
    """Zero-ablated and spliced passes start at the hook's block from the cached residual;
    their CE and KL must equal those of full forward passes with the same hooks."""
    torch.manual_seed(3)
    cfg = HookedTransformerConfig(
        **(tiny_config.to_dict() | {"positional_embedding_type": positional})
    )
    model = HookedTransformer(cfg).eval()
    sae = _standard(torch.randn(D, 2 * D) / D**0.5, torch.randn(2 * D, D) / D**0.5, hook)
    m = evaluate_sae(model, sae, tokens, batch_size=4, outlier_norm_factor=None)

    def replaced_by(fn):  # BOS stays clean, as in evaluate_saes
        def hook_fn(act, hook=None):
            out = fn(act)
            out[:, 0] = act[:, 0]
            return out

        return hook_fn

    with torch.no_grad():
        clean = model(tokens)
        spliced = model.run_with_hooks(tokens, fwd_hooks=[(hook, replaced_by(sae))])
        zero = model.run_with_hooks(tokens, fwd_hooks=[(hook, replaced_by(torch.zeros_like))])

    def ce(logits):
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()
        ).item()

    def kl(logits):
        p = clean[:, :-1].log_softmax(-1)
        q = logits[:, :-1].log_softmax(-1)
        return (p.exp() * (p - q)).sum(-1).mean().item()

    assert m.ce_clean == pytest.approx(ce(clean), abs=1e-5)
    assert m.ce_spliced == pytest.approx(ce(spliced), abs=1e-5)
    assert m.ce_zero_ablation == pytest.approx(ce(zero), abs=1e-5)
    assert m.kl_spliced == pytest.approx(kl(spliced), abs=1e-5)


def test_evaluation_builds_no_autograd_graph(model, tokens, monkeypatch):
    """Splicing runs under no_grad: an SAE's parameters require grad, and a graph through
    every spliced pass would cost memory and time for nothing."""
    from bae_lens import evaluate

    seen = []
    real = evaluate._ce_sum

    def recording(logprobs, batch):
        seen.append((torch.is_grad_enabled(), logprobs.requires_grad))
        return real(logprobs, batch)

    monkeypatch.setattr(evaluate, "_ce_sum", recording)
    sae = identity_sae()
    assert any(p.requires_grad for p in sae.parameters())
    evaluate_sae(model, sae, tokens, batch_size=4)
    assert seen and not any(enabled or needs for enabled, needs in seen)
