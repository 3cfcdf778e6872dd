"""The one hidden-state harvester (bae_lens.hidden_states): states equal to a full forward,
the forward stopped after the last hooked block, ragged batches, the keep mask (padding,
skipped ids, ignored positions, NaN and massive rows) and bad inputs, on a tiny random
HookedTransformer."""

from __future__ import annotations

import doctest
import logging
from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens import hidden_states
from bae_lens.hidden_states import collect_hidden_states, iter_hidden_states, typical_rows

H0, H1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_vocab=40, act_fn="gelu"
    )
    return HookedTransformer(cfg).eval()


def test_doctests() -> None:
    assert doctest.testmod(hidden_states).failed == 0


def test_states_match_a_full_forward_that_stops_after_the_last_hooked_block(
    model: HookedTransformer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = torch.randint(0, 40, (5, 12))
    _, full = model.run_with_cache(tokens)
    stops = []
    run = model.run_with_cache

    def spy(*args: Any, **kwargs: Any) -> Any:
        stops.append(kwargs["stop_at_layer"])
        return run(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_cache", spy)
    batches = list(iter_hidden_states(model, tokens, [H1, H0], batch_size=2))
    assert [b.start for b in batches] == [0, 2, 4] and stops == [2, 2, 2]
    for b in batches:
        assert b.keep.all() and b.lengths.tolist() == [12] * len(b.lengths)
        for hook in (H0, H1):
            assert torch.allclose(b.states[hook], full[hook][b.start : b.start + 2], atol=1e-5)
    got = collect_hidden_states(model, tokens, ["blocks.2.attn.hook_z"], batch_size=4)
    assert torch.allclose(got["blocks.2.attn.hook_z"], full["blocks.2.attn.hook_z"], atol=1e-5)
    assert stops[-1] == 3  # the last block: no unembedding
    list(iter_hidden_states(model, tokens, [H0, "ln_final.hook_normalized"]))
    assert stops[-1] is None  # a hook after the blocks: the whole model


def test_ragged_sequences_are_right_padded_and_masked(model: HookedTransformer) -> None:
    seqs = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    (batch,) = iter_hidden_states(model, seqs, [H0], batch_size=3, pad_token_id=0)
    assert batch.tokens.tolist() == [[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [13, 0, 0, 0, 0]]
    assert batch.lengths.tolist() == [3, 5, 1]
    assert batch.keep.sum(1).tolist() == [3, 5, 1]
    for row, seq in enumerate(seqs):
        _, alone = model.run_with_cache(torch.tensor([seq]))
        real = batch.states[H0][row, : len(seq)]
        assert torch.allclose(real, alone[H0][0], atol=1e-5)  # padding never seen


def test_keep_leaves_out_skipped_ids_ignored_positions_nan_and_massive_rows(
    model: HookedTransformer, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = torch.randint(3, 40, (2, 12))
    tokens[0, 5] = 1  # a skipped id

    def corrupt(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.clone()
        x[0, 2] = float("nan")
        x[1, 3] *= 1000.0  # a massive activation
        return x

    model.blocks[0].hook_resid_post.add_hook(corrupt, is_permanent=True)
    try:
        with caplog.at_level(logging.WARNING, logger="bae_lens.hidden_states"):
            (plain,) = iter_hidden_states(model, tokens, [H0], batch_size=2, skip_token_ids=[1])
            (strict,) = iter_hidden_states(
                model, tokens, [H0], batch_size=2, skip_token_ids=[1], ignore_positions=[0],
                outlier_factor=10.0,
            )  # fmt: skip
    finally:
        model.reset_hooks(including_permanent=True)
    expected = torch.ones(2, 12, dtype=torch.bool)
    expected[0, 5] = expected[0, 2] = False
    assert torch.equal(plain.keep, expected)  # NaN always left out, the massive row kept
    expected[:, 0] = expected[1, 3] = False
    assert torch.equal(strict.keep, expected)
    assert "1 positions hold NaN or inf" in caplog.text


def test_typical_rows_takes_the_median_of_the_finite_rows() -> None:
    x = torch.ones(6, 3)
    x[0] = float("inf")
    x[1] = 11.0  # norm 11 x the median of the finite rows
    assert typical_rows(x, 10.0).tolist() == [False, False, True, True, True, True]
    assert typical_rows(x, 12.0).tolist() == [False, True, True, True, True, True]
    assert not typical_rows(torch.full((2, 3), float("nan")), 10.0).any()
    assert typical_rows(torch.ones(2, 4, 3), None).shape == (2, 4)  # any leading shape


@pytest.mark.parametrize(
    ("tokens", "hooks", "kwargs", "match"),
    [
        (torch.zeros(4, dtype=torch.long), [H0], {}, r"tokens must be \[n_sequences, pos\]"),
        ([[1, 2], [3]], [H0], {}, "need a pad_token_id"),
        ([[1, 2], []], [H0], {"pad_token_id": 0}, "sequence 1 is empty"),
        (torch.zeros(2, 3, dtype=torch.long), [], {}, "hooks is empty"),
        (torch.zeros(2, 3, dtype=torch.long), ["blocks.7.hook_resid_post"], {}, "not a hook"),
        (torch.zeros(2, 3, dtype=torch.long), [H0], {"batch_size": 0}, "batch_size=0"),
        (torch.zeros(2, 3, dtype=torch.long), [H0], {"outlier_factor": 1.0}, "must be > 1"),
    ],
)
def test_bad_inputs(
    model: HookedTransformer, tokens: Any, hooks: list[str], kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        list(iter_hidden_states(model, tokens, hooks, **kwargs))
