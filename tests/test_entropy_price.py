"""The data-chosen entropy price (bae_lens.entropy_price) and the sets of known entropy it
is checked on (bae_lens.synthetic_sets)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import bae_lens.entropy_price as entropy_price
import bae_lens.synthetic_sets as synthetic_sets
from bae_lens.entropy_price import SweepPoint, auto_price, choose_price, knee, set_variance
from bae_lens.synthetic_sets import binary_entropy, independent_bits_set, markov_chain_set


@pytest.mark.parametrize("module", [entropy_price, synthetic_sets])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_markov_chain_has_fair_bits_flipping_at_the_given_rate() -> None:
    s = markov_chain_set(40_000, 8, 5, 0.1, noise=0.0, seed=1)
    assert s.codes.mean(0).sub(0.5).abs().max() < 0.01
    flips = (s.codes[:, 1:] != s.codes[:, :-1]).float().mean(0)
    assert flips.sub(0.1).abs().max() < 0.01
    assert s.joint_bits == pytest.approx(1 + 4 * binary_entropy(0.1))
    assert s.marginal_bits == 5.0
    # x = c D exactly without noise
    assert torch.allclose(s.x, s.codes @ s.directions, atol=1e-5)


def test_independent_bits_fire_at_their_rates_and_scale_multiplies_x() -> None:
    rates = [0.05, 0.2, 0.5]
    a = independent_bits_set(40_000, 8, rates, noise=0.1, seed=3)
    b = independent_bits_set(40_000, 8, rates, noise=0.1, scale=10.0, seed=3)
    assert a.codes.mean(0).sub(torch.tensor(rates)).abs().max() < 0.01
    assert torch.allclose(b.x, 10 * a.x, rtol=1e-5, atol=1e-5)
    assert a.joint_bits == pytest.approx(sum(binary_entropy(p) for p in rates))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: independent_bits_set(10, 4, [0.0, 0.5]), "rates"),
        (lambda: independent_bits_set(10, 4, [0.5], noise=-1.0), "noise"),
        (lambda: markov_chain_set(10, 4, 3, 0.7), "flip"),
        (lambda: markov_chain_set(10, 4, 3, 0.1, scale=0.0), "scale"),
        (lambda: markov_chain_set(0, 4, 3, 0.1), "n=0"),
    ],
)
def test_bad_set_options(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def _points(curve: list[tuple[float, float, float]], variance: float = 100.0) -> list[SweepPoint]:
    return [SweepPoint(rel * variance, rel, h, ev, True, 100) for rel, h, ev in curve]


def test_knee_of_a_set_with_true_bits_and_noise() -> None:
    # 10 true bits explain 90%; the rest is noise, coded at 1/100 of the price per bit
    curve = [(1e-4, 150.0, 0.95), (4e-4, 60.0, 0.93), (1e-3, 14.0, 0.905), (4e-3, 10.0, 0.9),
             (1e-2, 9.8, 0.899), (4e-2, 5.0, 0.5), (0.25, 0.1, 0.0)]  # fmt: skip
    choice = choose_price(_points(curve))
    assert choice.knee_bits == 9.8 and choice.plateau
    assert choice.price == pytest.approx(1.0)  # the price that landed on the knee
    assert choice.ratio > 8


def test_a_spare_bit_off_the_hull_does_not_move_the_knee() -> None:
    # a BAE that stopped short of its optimum: more bits, no better reconstruction
    curve = [(1e-4, 150.0, 0.95), (1e-3, 20.0, 0.9), (2e-3, 25.0, 0.899), (4e-3, 10.0, 0.9),
             (4e-2, 5.0, 0.5)]  # fmt: skip
    hull, k, _, _ = knee(_points(curve))
    assert [p.entropy_bits for p in hull] == [0.0, 5.0, 10.0, 150.0]
    assert hull[k].entropy_bits == 10.0


def test_a_smooth_power_law_has_no_clear_knee() -> None:
    # D = H^-0.5: every rate is worth a little less than the one before, no plateau
    rates = [2.0**j for j in range(1, 9)]
    curve = [(1.0 / h, h, 1 - h**-0.5) for h in rates]
    choice = choose_price(_points(curve))
    assert not choice.plateau
    assert "NO CLEAR KNEE" in choice.reason


def test_a_sweep_with_one_useful_point_is_refused() -> None:
    with pytest.raises(ValueError, match="extend the grid"):
        choose_price(_points([(0.1, 5.0, 0.5), (0.5, 0.1, 0.0)]))


def test_set_variance_is_scale_free_once_normalised() -> None:
    s = independent_bits_set(4000, 16, [0.3, 0.5], noise=0.05, seed=0)
    assert set_variance(10 * s.x) == pytest.approx(set_variance(s.x), rel=1e-4)
    assert set_variance(10 * s.x, "none") == pytest.approx(100 * set_variance(s.x, "none"),
                                                           rel=1e-4)  # fmt: skip


def test_auto_price_finds_the_true_bits_of_a_small_set() -> None:
    torch.manual_seed(0)
    s = independent_bits_set(3000, 16, [0.2, 0.35, 0.5, 0.5], noise=0.03, seed=0)
    choice = auto_price(s.x, d_sae=16, steps=800, batch_size=256, lr=3e-3,
                        relative_prices=[4.0**-k for k in range(1, 7)], refine=0)  # fmt: skip
    assert choice.plateau, choice.reason
    assert choice.knee_bits == pytest.approx(s.joint_bits, rel=0.1), choice.to_dict()
    assert math.isfinite(choice.price) and choice.price > 0
    assert len(choice.to_dict()["sweep"]) == 6


def test_auto_price_refuses_bad_options() -> None:
    x = torch.randn(100, 4)
    with pytest.raises(ValueError, match="refine"):
        auto_price(x, refine=-1)
    with pytest.raises(ValueError, match="expected"):
        auto_price(x[None])
    with pytest.raises(ValueError, match="relative_prices"):
        auto_price(x, relative_prices=[0.0])


def test_cli_auto_price_trains_each_layer_at_its_chosen_price(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``bae-lens entropy --auto-price`` on a tiny model: the sweep goes into the JSON and the
    layer's BAE trains at the price it chose."""
    import json

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    import bae_lens.cli.entropy as cli_entropy
    import bae_lens.corpus
    import bae_lens.evaluate
    import bae_lens.models
    from bae_lens.cli import main

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4,
                                  d_vocab=50, act_fn="gelu")  # fmt: skip
    tiny = HookedTransformer(cfg).eval()
    tiny.tokenizer = type("Tok", (), {"bos_token_id": 0, "padding_side": "right"})()  # type: ignore[assignment]
    monkeypatch.setattr(bae_lens.models, "load_model", lambda *a, **k: tiny)
    monkeypatch.setattr(bae_lens.corpus, "load_embedded_corpus", lambda split: {"text": ["x"]})
    monkeypatch.setattr(bae_lens.evaluate, "build_eval_tokens",
                        lambda tok, texts, ctx, n, bos: torch.randint(0, 50, (n, ctx)))  # fmt: skip
    used: list[float] = []
    real = cli_entropy.entropy_by_layer

    def spy(states, **kw):  # type: ignore[no-untyped-def]
        used.append(kw["entropy_coefficient"])
        return real(states, **kw)

    monkeypatch.setattr(cli_entropy, "entropy_by_layer", spy)
    out = tmp_path / "e.json"
    argv = ["entropy", "--layers", "1", "--sequences", "16", "--context-size", "32",
            "--steps", "50", "--batch-size", "64", "--expansion", "2", "--auto-price",
            "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    entry = json.loads(out.read_text())["layers"]["blocks.1.hook_resid_post"]
    price = entry["price"]
    assert len(price["sweep"]) >= 7 and price["price"] > 0
    assert used == [price["price"]]
