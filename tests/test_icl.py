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
    LABEL_WORDS,
    build_icl_prompts,
    collect_icl_states,
    icl_entropy_curve,
    label_token_ids,
    last_token_states,
    load_icl_states,
    plot_icl_curve,
    save_icl_states,
    with_random_labels,
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
        assert p.demo_labels == tuple(i % 2 for i in p.demo_indices)
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
    assert "random_labels" not in record  # states saved without the control: a note, no error
    assert "holds no random-label control states" in capsys.readouterr().out
    assert set(record["entropy_bits"]) == {"0", "1"} and "command" in record
    assert (tmp_path / "icl.png").is_file()
    assert main([*argv[:-6], "--n-prompts", "9", "--output", str(tmp_path / "x.json")]) == 2
    assert "holds ks=[0, 3], layers=[0, 1], n_prompts=8" in capsys.readouterr().err


def _demonstrations(text: str) -> list[str]:
    """The demonstrations of a prompt, then its query."""
    return text.split("\n\n")


def test_random_labels_keep_demonstrations_query_and_token_length(
    model: HookedTransformer,
) -> None:
    real = build_icl_prompts(EXAMPLES, 4, 30, seed=7)
    control = with_random_labels(real, EXAMPLES, seed=7)
    assert control == with_random_labels(real, EXAMPLES, seed=7)  # seeded
    assert control != with_random_labels(real, EXAMPLES, seed=8)
    tok = model.tokenizer
    n_changed = 0
    for p, c in zip(real, control, strict=True):
        assert (c.query_index, c.demo_indices, c.label) == (p.query_index, p.demo_indices, p.label)
        assert len(tok(c.text)["input_ids"]) == len(tok(p.text)["input_ids"])  # type: ignore[misc]
        assert len(c.text) == len(p.text)  # " negative" and " positive": 8 letters each
        shown, truth = _demonstrations(c.text), _demonstrations(p.text)
        assert shown[-1] == truth[-1] and c.text.endswith("Sentiment:")  # the query unchanged
        for i, (d_shown, d_truth) in enumerate(zip(shown[:-1], truth[:-1], strict=True)):
            assert d_shown.endswith(f"Sentiment: {LABEL_WORDS[c.demo_labels[i]]}")
            assert d_truth.endswith(f"Sentiment: {LABEL_WORDS[p.demo_labels[i]]}")
            changed = c.demo_labels[i] != p.demo_labels[i]
            assert (d_shown != d_truth) == changed  # only where the label was redrawn
            n_changed += changed
    assert 0.3 < n_changed / (30 * 4) < 0.7  # uniform labels: about half match the truth
    assert with_random_labels(build_icl_prompts(EXAMPLES, 0, 3), EXAMPLES) == build_icl_prompts(
        EXAMPLES, 0, 3
    )  # no demonstration: nothing to relabel


def test_collect_with_random_labels_runs_the_control_prompts(model: HookedTransformer) -> None:
    states = collect_icl_states(
        model, EXAMPLES, [0, 2], [0, 1], n_prompts=12, seed=3, random_labels=True
    )
    control = states.random_labels
    assert control is not None and len(control.accuracy) == 2
    assert collect_icl_states(model, EXAMPLES, [0], [0], n_prompts=2).random_labels is None
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    ids = label_token_ids(model.tokenizer)
    for i, k in enumerate([0, 2]):
        prompts = with_random_labels(
            build_icl_prompts(EXAMPLES, k, 12, seed=3000 + k), EXAMPLES, seed=3000 + k
        )
        got = last_token_states(model, [p.text for p in prompts], hooks, logit_ids=ids)
        labels = torch.tensor([p.label for p in prompts])  # the query's true label
        assert control.accuracy[i] == float((got.logits.argmax(1) == labels).float().mean())
        for layer, hook in zip([0, 1], hooks, strict=True):
            assert torch.allclose(control.states[layer][i], got.states[hook], atol=1e-6)
    for layer in (0, 1):
        assert torch.equal(control.states[layer][0], states.states[layer][0])  # k = 0
        assert not torch.allclose(control.states[layer][1], states.states[layer][1])


def test_curve_reads_the_control_with_the_same_bae(model: HookedTransformer, tmp_path) -> None:
    states = collect_icl_states(
        model, EXAMPLES, [0, 2], [0, 1], n_prompts=12, seed=3, random_labels=True
    )
    assert states.random_labels is not None
    saes = {0: _bae(16, 32), 1: _bae(16, 32)}
    curve = icl_entropy_curve(states, saes=saes)
    control = curve.random_labels
    assert control is not None and control.accuracy == states.random_labels.accuracy
    for layer in (0, 1):
        for i in range(2):
            est = estimate_entropy(saes[layer], states.random_labels.states[layer][i])
            assert control.entropy_bits[layer][i] == est.entropy_bits
            assert control.n_informative[layer][i] == est.n_informative
        assert control.entropy_bits[layer][0] == curve.entropy_bits[layer][0]  # k = 0
    record = curve.to_dict()["random_labels"]
    assert record["accuracy"] == [round(a, 4) for a in control.accuracy]
    assert set(record["entropy_bits"]) == {"0", "1"} and "drawn uniformly" in record["description"]
    plot_icl_curve(curve, "tiny", str(tmp_path / "icl.png"))
    assert (tmp_path / "icl.png").stat().st_size > 0
    trained = icl_entropy_curve(states, expansion=2, steps=5, batch_size=16)
    assert trained.random_labels is not None and len(trained.random_labels.entropy_bits[1]) == 2
    save_icl_states(states, tmp_path / "s.safetensors")
    again = load_icl_states(tmp_path / "s.safetensors")
    assert again.random_labels is not None
    assert again.random_labels.accuracy == states.random_labels.accuracy
    for x, y in zip(again.random_labels.states[1], states.random_labels.states[1], strict=True):
        assert torch.equal(x, y)


def test_cli_icl_control(model: HookedTransformer, tmp_path, capsys) -> None:
    import json

    from bae_lens.cli import main

    states = collect_icl_states(
        model, EXAMPLES, [0, 3], [0, 1], n_prompts=8, seed=0, random_labels=True
    )
    assert states.random_labels is not None
    save_icl_states(states, tmp_path / "s.safetensors")
    argv = ["entropy", "--icl", "--states", str(tmp_path / "s.safetensors"), "--ks", "0,3",
            "--layers", "0,1", "--n-prompts", "8", "--steps", "3", "--batch-size", "8",
            "--expansion", "2"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "on.json")]) == 0  # on by default
    record = json.loads((tmp_path / "on.json").read_text())
    accuracy = [round(a, 4) for a in states.random_labels.accuracy]
    assert record["random_labels"]["accuracy"] == accuracy
    assert set(record["random_labels"]["entropy_bits"]) == {"0", "1"}
    assert "(random labels)" in capsys.readouterr().out
    off = ["--icl-control", "none", "--output", str(tmp_path / "off.json")]
    assert main([*argv, *off]) == 0
    assert "random_labels" not in json.loads((tmp_path / "off.json").read_text())
