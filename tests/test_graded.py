"""Graded views of a binary code (BinaryAutoencoder.set_activation_view) and the top
examples they rank (bae_lens.feature_examples), against ComSem's burst-score samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig, load_bae
from bae_lens.comsem.collect import Collection, Sample, collect
from bae_lens.feature_examples import (
    Example,
    FeatureExamples,
    comsem_agreement,
    mine_examples,
)

D, D_SAE, HOOK = 8, 24, "blocks.1.hook_resid_post"


def _hand_built() -> BinaryAutoencoder:
    sae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=2, d_sae=3))
    sae.W_enc.data = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    sae.b_enc.data = torch.tensor([0.0, -1.0, 0.5])
    sae.b_dec.data = torch.zeros(2)
    sae.W_dec.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return sae


X = torch.tensor([[2.0, 1.0], [-1.0, 0.0]])  # z = [[2, 1, -1.5], [-1, -1, 1.5]]


def test_views_by_hand() -> None:
    sae = _hand_built()
    assert sae.activation_view == "code"
    assert sae.encode(X).tolist() == [[1, 1, 0], [0, 0, 1]]
    assert sae.set_activation_view("margin").encode(X).tolist() == [[2, 1, 0], [0, 0, 1.5]]
    # bit 1 fires on 90% of tokens: its departures are where z <= 0, graded by -z
    rates = torch.tensor([0.2, 0.9, 0.5])
    assert sae.set_activation_view("burst", rates).encode(X).tolist() == [
        [2, 0, 0],
        [0, 1, 1.5],
    ]
    assert sae.set_activation_view("code").encode(X).tolist() == [[1, 1, 0], [0, 0, 1]]


def _random_bae(seed: int = 0, d_in: int = 6, d_sae: int = 10) -> BinaryAutoencoder:
    torch.manual_seed(seed)
    sae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=d_in, d_sae=d_sae))
    sae.b_enc.data = torch.randn(d_sae)
    sae.b_dec.data = torch.randn(d_in)
    return sae


@pytest.mark.parametrize("view", ["margin", "burst"])
def test_graded_views_keep_reconstruction_and_l0(view: str) -> None:
    sae = _random_bae()
    x = torch.randn(50, 6)
    code, out = sae.encode(x), sae(x)
    assert torch.equal(sae.decode(code), out)
    rates = code.mean(0)
    assert (rates > 0.5).any() and (rates <= 0.5).any()  # both kinds of bit are exercised
    graded = sae.set_activation_view(view, rates).encode(x)
    assert not torch.equal(graded, code) and (graded >= 0).all()
    assert torch.equal(sae(x), out)
    assert torch.equal(sae.decode(graded), out)
    departed = code != (rates > 0.5).float() if view == "burst" else code.bool()
    assert torch.equal(graded > 0, departed)


def test_margin_view_passes_gradients_to_hooks_and_input() -> None:
    sae = _random_bae().set_activation_view("margin")
    seen: list[torch.Tensor] = []
    sae.hook_sae_acts_post.add_hook(lambda grad, hook: seen.append(grad[0]), dir="bwd")
    x = torch.randn(4, 6, requires_grad=True)
    sae(x).sum().backward()
    assert seen and x.grad is not None and x.grad.abs().sum() > 0
    # d sum(relu(z)) / dx = W_enc 1[z > 0] per row: relu's own derivative
    x2 = x.detach().requires_grad_(True)
    sae.encode(x2).sum().backward()
    z = sae.hidden_pre(x2.detach())
    assert torch.allclose(x2.grad, (z > 0).float() @ sae.W_enc.T)


def test_burst_values_survive_flip_bits() -> None:
    sae = _random_bae(1)
    x = torch.randn(40, 6)
    rates = sae.encode(x).mean(0)
    sae.set_activation_view("burst", rates)
    before, out = sae.encode(x), sae(x)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 3, 7]] = True
    assert sae.flip_bits_(mask) == 3
    assert torch.allclose(sae.encode(x), before, atol=1e-5)
    assert torch.allclose(sae(x), out, atol=1e-5)


def test_a_loaded_bae_starts_in_code_view(tmp_path: Any) -> None:
    sae = _random_bae().set_activation_view("margin")
    sae.save_model(tmp_path / "bae")
    loaded = load_bae(tmp_path / "bae")
    assert loaded.activation_view == "code"
    assert set(loaded.encode(torch.randn(20, 6)).unique().tolist()) <= {0.0, 1.0}


BAD_VIEWS: list[tuple[str, Callable[[], Any], str]] = [
    ("unknown view", lambda: _random_bae().set_activation_view("loud"),
     r"view='loud' is not one of \['code', 'margin', 'burst'\]"),
    ("burst without rates", lambda: _random_bae().set_activation_view("burst"),
     "view='burst' needs firing_rates"),
    ("rates of the wrong shape",
     lambda: _random_bae().set_activation_view("burst", torch.zeros(3)),
     r"firing_rates of shape \(3,\): expected \(10,\) values in \[0, 1\]"),
    ("rates above 1", lambda: _random_bae().set_activation_view("burst", torch.full((10,), 2.0)),
     r"expected \(10,\) values in \[0, 1\]"),
    ("two bits per feature",
     lambda: BinaryAutoencoder(BinaryAutoencoderConfig(d_in=2, d_sae=2, bits_per_feature=2))
     .set_activation_view("margin"),
     "view='margin' needs bits_per_feature=1 and binarization='step', this BAE has "
     "bits_per_feature=2"),
    ("square wave",
     lambda: BinaryAutoencoder(BinaryAutoencoderConfig(d_in=2, d_sae=2,
                                                       binarization="square_wave"))
     .set_activation_view("margin"),
     "binarization='square_wave'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "call", "match"), BAD_VIEWS, ids=[c[0] for c in BAD_VIEWS])
def test_bad_views_are_refused(name: str, call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------ mining on a tiny model
@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D, n_ctx=32, d_head=4, n_heads=2, d_vocab=40, act_fn="gelu",
        normalization_type="LN",
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    toks = torch.randint(1, 40, (10, 16), generator=torch.Generator().manual_seed(1))
    toks[:, 0] = 0  # BOS-like, skipped
    return toks


def _bae() -> BinaryAutoencoder:
    torch.manual_seed(2)
    cfg = BinaryAutoencoderConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))
    sae = BinaryAutoencoder(cfg)
    sae.b_enc.data = torch.randn(D_SAE) * 0.5
    return sae


def _all_acts(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    return cache[HOOK]  # [n, T, d]


@pytest.mark.parametrize("view", ["margin", "burst"])
def test_mined_examples_are_the_brute_force_top(
    model: HookedTransformer, tokens: torch.Tensor, view: str
) -> None:
    sae = _bae()
    ex = mine_examples(model, sae, tokens, view=view, n_top=4, track=[0, 5], batch_size=3,
                       skip_token_ids=[0], progress=False)  # fmt: skip
    assert sae.activation_view == "code"  # the caller's SAE is untouched
    acts = _all_acts(model, tokens)[:, 1:]  # position 0 is the skipped token
    rates = sae.encode(acts).mean((0, 1))
    assert ex.n_tokens == 10 * 15
    assert torch.allclose(torch.tensor(ex.firing_rates), rates)
    values = sae.set_activation_view(view, rates).encode(acts)  # [n, T-1, d_sae]
    flat = values.reshape(-1, D_SAE)
    for j in range(D_SAE):
        want = [v for v in flat[:, j].sort(descending=True).values[:4].tolist() if v > 0]
        assert [e.value for e in ex.top.get(j, [])] == pytest.approx(want)
        for e in ex.top.get(j, []):
            assert values[e.sequence, e.position - 1, j].item() == pytest.approx(e.value)
    assert ex.tracked_values is not None
    assert torch.allclose(ex.tracked_values[:, :, 1:], values[..., [0, 5]].permute(2, 0, 1))
    assert (ex.tracked_values[:, :, 0] == 0).all()


def test_ignored_positions_are_neither_ranked_nor_counted(
    model: HookedTransformer, tokens: torch.Tensor
) -> None:
    sae = _bae()
    ex = mine_examples(model, sae, tokens, view="margin", n_top=50, skip_token_ids=[0],
                       ignore_positions=(1, 2), progress=False)  # fmt: skip
    assert ex.n_tokens == 10 * 13
    assert all(e.position > 2 for exs in ex.top.values() for e in exs)
    acts = _all_acts(model, tokens)[:, 3:]
    assert torch.allclose(torch.tensor(ex.firing_rates), sae.encode(acts).mean((0, 1)))
    with pytest.raises(ValueError, match=r"ignore_positions=\(16,\): positions are 0..15"):
        mine_examples(model, sae, tokens, ignore_positions=(16,), progress=False)


def test_agreement_by_hand() -> None:
    samples = {0: [Sample(0, 1, "a", "a"), Sample(0, 2, "b", "b"), Sample(1, 0, "c", "c")]}
    coll = Collection("bae", "burst", 1, 6, [0.5, 0.0], [3, 0], samples)
    ex = FeatureExamples(
        "burst", 6, [0.5, 0.0], [0.5, 0.0],
        {0: [Example(0, 2, 3.0), Example(1, 2, 2.0)], 1: [Example(0, 0, 1.0)]},
    )  # fmt: skip
    values = torch.zeros(2, 3, 2)
    values[0, 1:, 0] = 1.0  # feature 0 active at (0, 1), (0, 2), (1, 2)
    values[1, 2, 0] = 1.0
    agree = comsem_agreement(ex, coll, values, n=2, min_samples=3)
    assert agree.n_features == 1
    assert agree.precision == 0.5  # (0, 2) assigned, (1, 2) not
    assert agree.chance == pytest.approx(2 / 3)  # 2 of the 3 active tokens assigned
    assert agree.samples_active == pytest.approx(2 / 3)  # (1, 0) is not active
    assert agree.above_chance == 0.0
    # position 0 left out: ComSem keeps (0, 1) and (0, 2), the top examples are unchanged
    agree = comsem_agreement(ex, coll, values, n=2, min_samples=2, ignore_positions=(0,))
    assert (agree.precision, agree.chance, agree.samples_active) == (0.5, 2 / 3, 1.0)
    cut = Collection("bae", "burst", 1, 6, [0.5, 0.0], [4, 0], samples)
    with pytest.raises(ValueError, match="feature 0: the collection keeps 3 of its 4"):
        comsem_agreement(ex, cut, n=2, min_samples=3)


def test_comsem_samples_are_where_the_burst_view_is_positive(
    model: HookedTransformer, tokens: torch.Tensor
) -> None:
    """ComSem's burst score and the burst view agree on which tokens a bit departs at;
    whether the ranking by margin picks ComSem's tokens is measured on a trained BAE
    (benchmarks/graded_vs_comsem.py), not asserted on a random one."""
    sae = _bae()
    coll = collect(model, sae, tokens, HOOK, k=3, max_samples=10_000, batch_size=4,
                   skip_token_ids=[0], progress=False)  # fmt: skip
    ex = mine_examples(model, sae, tokens, view="burst", n_top=5, track=list(range(D_SAE)),
                       skip_token_ids=[0], progress=False)  # fmt: skip
    assert ex.tracked_values is not None
    agree = comsem_agreement(ex, coll, ex.tracked_values.permute(1, 2, 0), n=5, min_samples=3)
    assert agree.n_features >= 5
    assert agree.samples_active > 0.95  # a token's top-3 can hold a non-departed bit
    assert 0 <= agree.precision <= 1 and 0 < agree.chance <= 1
