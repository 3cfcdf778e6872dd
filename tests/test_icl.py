"""The in-context-learning entropy curve (bae_lens.icl): prompt builder, last-token states
and label logits against a plain forward pass, the curve end to end on a tiny random
HookedTransformer with a word-level tokenizer, and bad inputs."""

from __future__ import annotations

import re
import zlib

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.entropy import estimate_entropy
from bae_lens.icl import (
    build_icl_prompts,
    collect_icl_states,
    icl_entropy_curve,
    label_token_ids,
    last_token_states,
    load_icl_states,
    plot_icl_curve,
    save_icl_states,
)

VOCAB = 60


class WordTokenizer:
    """Each word (with its leading space) or newline is one token; ids by CRC32."""

    bos_token_id, pad_token_id, eos_token_id = 0, 1, 2
    padding_side = "right"

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        pieces = re.findall(r" ?[^\s]+|\n", text)
        return {"input_ids": [3 + zlib.crc32(p.encode()) % (VOCAB - 3) for p in pieces]}


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=128, d_head=4, n_heads=4, d_vocab=VOCAB, act_fn="gelu",
        normalization_type="LN",
    )  # fmt: skip
    model = HookedTransformer(cfg).eval()
    model.tokenizer = WordTokenizer()  # type: ignore[assignment]
    return model


EXAMPLES = [(f"film {i} was {'good' if i % 2 else 'bad'}", i % 2) for i in range(40)]


def test_icl_prompts_draw_their_own_demonstrations() -> None:
    examples = [(f"review number {i}", i % 2) for i in range(50)]
    prompts = build_icl_prompts(examples, 4, 20, seed=0)
    demo_sets = {p.demo_indices for p in prompts}
    assert len(demo_sets) > 15  # not the same first k for every prompt
    assert any(p.demo_indices != (0, 1, 2, 3) for p in prompts)
    for p in prompts:
        assert p.query_index not in p.demo_indices
        assert len(set(p.demo_indices)) == 4
        assert p.text.count("Sentiment:") == 5
        assert p.text.endswith(f"Review: review number {p.query_index}\nSentiment:")
        assert p.label == p.query_index % 2
        for i in p.demo_indices:
            word = "positive" if i % 2 else "negative"
            assert f"review number {i}\nSentiment: {word}\n\n" in p.text
    zero = build_icl_prompts(examples, 0, 3, seed=0)
    assert all(p.demo_indices == () and p.text.startswith("Review:") for p in zero)


@pytest.mark.parametrize(
    ("examples", "k", "n", "match"),
    [
        ([("a", 0), ("b", 1)], 2, 1, "need k \\+ 1"),
        ([("a", 0), ("b", 2)], 1, 1, "labels must be"),
        ([("a", 0), ("b", 1)], -1, 1, "k=-1"),
        ([("a", 0), ("b", 1)], 0, 0, "n_prompts=0"),
        ([("a", 1), ("b", 1), ("c", 1)], 1, 1, "no 'negative' label"),
        ([("a", 0), ("b", 0)], 1, 1, "no 'positive' label"),
    ],
)
def test_icl_prompts_bad_inputs(examples: list, k: int, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_icl_prompts(examples, k, n)


def test_last_token_states_match_a_plain_forward(model: HookedTransformer) -> None:
    texts = ["Review: short\nSentiment:", "Review: a much longer text here\nSentiment:", "x"]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    ids = [5, 17, 42]
    got = last_token_states(model, texts, hooks, logit_ids=ids, batch_size=2)  # padded batch
    assert got.logits.shape == (3, 3)
    for row, text in enumerate(texts):
        tokens = torch.tensor([[0, *model.tokenizer(text)["input_ids"]]])  # type: ignore[misc]
        logits, cache = model.run_with_cache(tokens)
        assert torch.allclose(got.logits[row], logits[0, -1, ids], atol=1e-5)
        for hook in hooks:
            assert torch.allclose(got.states[hook][row], cache[hook][0, -1], atol=1e-5)
    alone = last_token_states(model, texts, hooks[:1], batch_size=2)  # no logits asked
    assert alone.logits.shape == (3, 0)
    assert torch.allclose(alone.states[hooks[0]], got.states[hooks[0]], atol=1e-6)
    with pytest.raises(ValueError, match="is not a hook of the model"):
        last_token_states(model, texts, ["blocks.9.hook_resid_post"])
    with pytest.raises(ValueError, match="no texts"):
        last_token_states(model, [], hooks)


def test_label_token_ids() -> None:
    tok = WordTokenizer()
    assert label_token_ids(tok) == [
        tok(" negative")["input_ids"][0],
        tok(" positive")["input_ids"][0],
    ]

    class Split(WordTokenizer):
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [3] * len(text)}

    with pytest.raises(ValueError, match="'negative' is 9 tokens"):
        label_token_ids(Split())


def _bae(d_in: int, d_sae: int) -> BinaryAutoencoderTraining:
    torch.manual_seed(1)
    return BinaryAutoencoderTraining(
        BinaryAutoencoderTrainingConfig(d_in=d_in, d_sae=d_sae, init_firing_rate=None)
    ).eval()


def test_curve_with_given_baes_equals_direct_estimates(model: HookedTransformer, tmp_path) -> None:
    saes = {0: _bae(16, 32), 1: _bae(16, 32)}
    states = collect_icl_states(model, EXAMPLES, [0, 2], [0, 1], n_prompts=12, seed=3)
    curve = icl_entropy_curve(states, saes=saes)
    assert curve.ks == [0, 2] and curve.layers == [0, 1] and curve.n_prompts == 12
    for i, k in enumerate(curve.ks):
        prompts = build_icl_prompts(EXAMPLES, k, 12, seed=3000 + k)
        hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
        ids = label_token_ids(model.tokenizer)
        got = last_token_states(model, [p.text for p in prompts], hooks, logit_ids=ids)
        labels = torch.tensor([p.label for p in prompts])
        assert curve.accuracy[i] == float((got.logits.argmax(1) == labels).float().mean())
        for layer, hook in zip([0, 1], hooks, strict=True):
            est = estimate_entropy(saes[layer], got.states[hook])
            assert curve.entropy_bits[layer][i] == est.entropy_bits
            assert curve.n_informative[layer][i] == est.n_informative
    record = curve.to_dict()
    assert set(record["entropy_bits"]) == {"0", "1"} and len(record["accuracy"]) == 2
    plot_icl_curve(curve, "tiny", str(tmp_path / "icl.png"))
    assert (tmp_path / "icl.png").stat().st_size > 0


def test_curve_trains_one_bae_per_layer_on_pooled_states(model: HookedTransformer) -> None:
    states = collect_icl_states(model, EXAMPLES, [0, 1, 2], [1], n_prompts=16)
    curve = icl_entropy_curve(states, expansion=2, steps=5, batch_size=16)
    assert len(curve.entropy_bits[1]) == 3
    assert all(0.0 <= h <= 32.0 for h in curve.entropy_bits[1])  # at most n_bits = 2 x 16
    small = collect_icl_states(model, EXAMPLES, [0, 1], [1], n_prompts=4)
    with pytest.raises(ValueError, match="too small"):  # 2 x 4 pooled rows < batch 16
        icl_entropy_curve(small, steps=1, batch_size=16)
    with pytest.raises(ValueError, match="saes are given for layers \\[0\\]"):
        icl_entropy_curve(small, saes={0: None})


def test_states_round_trip_and_foreign_files(model: HookedTransformer, tmp_path) -> None:
    states = collect_icl_states(model, EXAMPLES, [0, 3], [0, 1], n_prompts=5, seed=1)
    save_icl_states(states, tmp_path / "s.safetensors")
    again = load_icl_states(tmp_path / "s.safetensors")
    assert (again.ks, again.layers, again.n_prompts) == ([0, 3], [0, 1], 5)
    assert again.accuracy == states.accuracy
    for layer in (0, 1):
        for x, y in zip(states.states[layer], again.states[layer], strict=True):
            assert torch.equal(x, y)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not an ICL states file"):
        load_icl_states(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read ICL states"):
        load_icl_states(tmp_path / "junk.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ks": [], "layers": [0]}, "must be non-empty"),
        ({"ks": [-1], "layers": [0]}, "must be >= 0"),
        ({"ks": [0], "layers": [2]}, "layers 0..1"),
    ],
)
def test_collect_bad_inputs(model: HookedTransformer, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collect_icl_states(model, EXAMPLES, n_prompts=2, **kwargs)


def test_cli_icl_from_saved_states(model: HookedTransformer, tmp_path, capsys) -> None:
    import json

    from bae_lens.cli import main

    states = collect_icl_states(model, EXAMPLES, [0, 3], [0, 1], n_prompts=8, seed=0)
    save_icl_states(states, tmp_path / "s.safetensors")
    argv = ["entropy", "--icl", "--states", str(tmp_path / "s.safetensors"), "--ks", "0,3",
            "--layers", "0,1", "--n-prompts", "8", "--steps", "3", "--batch-size", "8",
            "--expansion", "2", "--output", str(tmp_path / "icl.json")]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "icl.json").read_text())
    assert record["ks"] == [0, 3] and record["accuracy"] == [round(a, 4) for a in states.accuracy]
    assert set(record["entropy_bits"]) == {"0", "1"} and "command" in record
    assert (tmp_path / "icl.png").is_file()
    assert main([*argv[:-6], "--n-prompts", "9", "--output", str(tmp_path / "x.json")]) == 2
    assert "holds ks=[0, 3], layers=[0, 1], n_prompts=8" in capsys.readouterr().err
