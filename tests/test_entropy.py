"""Entropy of hidden-state sets (bae_lens.entropy) and the sentiment loader: exact values on
hand-built BAEs, streaming == one-shot, the synthetic generator, a trained BAE
on a set of known entropy and bad inputs. No real model: a tiny random HookedTransformer at most."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.entropy import (
    FiringCounter,
    estimate_entropy,
    joint_code_entropy,
    synthetic_binary_set,
    train_set_bae,
)
from bae_lens.hidden_states import collect_hidden_states, layer_hooks
from bae_lens.sentiment_data import extract_movie_reviews, load_movie_reviews


def identity_bae(r: int, extra_always_on: int = 0) -> BinaryAutoencoderTraining:
    """Bit j = 1[x_j > 0.5] for j < r, plus bits that always fire."""
    d_sae = r + extra_always_on
    cfg = BinaryAutoencoderTrainingConfig(d_in=r, d_sae=d_sae, init_firing_rate=None)
    sae = BinaryAutoencoderTraining(cfg)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :r] = torch.eye(r)
        sae.b_enc.fill_(-0.5)
        sae.b_enc[r:] = 1.0
        sae.b_dec.zero_()
    return sae


def all_patterns(r: int, repeats: int = 3) -> torch.Tensor:
    codes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=r)))  # [2^r, r]
    return codes.repeat(repeats, 1)


@pytest.mark.parametrize("r", [1, 3, 6])
def test_all_patterns_equally_often_give_exactly_r_bits(r: int) -> None:
    est = estimate_entropy(identity_bae(r, extra_always_on=2), all_patterns(r), batch_size=5)
    assert est.entropy_bits == pytest.approx(r, abs=1e-12)
    assert (est.n_bits, est.n_nonconstant, est.n_informative) == (r + 2, r, r)
    assert est.firing_rates[:r].tolist() == [0.5] * r
    assert est.firing_rates[r:].tolist() == [1.0, 1.0]
    assert est.n_samples == 3 * 2**r


def test_joint_code_entropy_exact() -> None:
    assert joint_code_entropy(identity_bae(4, 1), all_patterns(4), batch_size=7) == 4.0
    redundant = all_patterns(2)[:, [0, 0, 1]]  # bit 0 copied: marginals 3 bits, joint 2
    assert estimate_entropy(identity_bae(3), redundant).entropy_bits == pytest.approx(3.0)
    assert joint_code_entropy(identity_bae(3), redundant) == pytest.approx(2.0)
    assert joint_code_entropy(identity_bae(2), torch.ones(5, 2)) == 0.0


def test_all_equal_vectors_give_zero_bits() -> None:
    torch.manual_seed(0)
    sae = BinaryAutoencoderTraining(BinaryAutoencoderTrainingConfig(d_in=8, d_sae=32))
    est = estimate_entropy(sae, torch.randn(1, 8).repeat(100, 1))
    assert est.entropy_bits == 0.0
    assert est.n_nonconstant == 0 and est.n_informative == 0


def test_streaming_equals_one_shot() -> None:
    torch.manual_seed(0)
    sae = BinaryAutoencoderTraining(BinaryAutoencoderTrainingConfig(d_in=8, d_sae=16))
    x = torch.randn(103, 8)
    one_shot = estimate_entropy(sae, x, batch_size=1000)
    by_batch = estimate_entropy(sae, x, batch_size=7)
    from_generator = estimate_entropy(sae, (x[i : i + 10] for i in range(0, 103, 10)))
    by_position = estimate_entropy(sae, x[:100].reshape(10, 10, 8))  # leading dims flatten
    for est in (by_batch, from_generator):
        assert torch.equal(est.firing_rates, one_shot.firing_rates)
        assert est.entropy_bits == one_shot.entropy_bits
        assert est.n_samples == 103
    assert by_position.n_samples == 100


def test_firing_counter_exact_and_bad_shape() -> None:
    counter = FiringCounter(3)
    counter.update(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    est = counter.estimate()
    assert est.entropy_bits == pytest.approx(1.0)
    assert est.firing_rates.tolist() == [0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="n_bits=3"):
        counter.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="empty"):
        FiringCounter(3).estimate()
    with pytest.raises(ValueError, match="n_bits"):
        FiringCounter(0)


def test_synthetic_set_properties() -> None:
    data = synthetic_binary_set(4000, 16, 5, noise=0.0, seed=1)
    assert data.x.shape == (4000, 16) and data.codes.shape == (4000, 5)
    assert data.true_entropy_bits == 5.0
    assert set(data.codes.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(data.directions.norm(dim=1), torch.ones(5))
    assert torch.allclose(data.x, data.codes @ data.directions)
    rates = data.codes.mean(0)
    assert ((rates - 0.5).abs() < 0.05).all()  # fair bits
    cov = torch.cov(data.codes.T)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 0.03  # independent bits
    again = synthetic_binary_set(4000, 16, 5, noise=0.0, seed=1)
    assert torch.equal(again.x, data.x)
    noisy = synthetic_binary_set(4000, 16, 5, noise=0.1, seed=1)
    assert (noisy.x - noisy.codes @ noisy.directions).std() == pytest.approx(0.1, rel=0.05)


def test_train_set_bae_small_set_and_raw_inputs() -> None:
    with pytest.raises(ValueError, match="too small"):
        train_set_bae(torch.randn(100, 8), 16, batch_size=512)
    with pytest.raises(ValueError, match="expected \\[n, d_in\\]"):
        train_set_bae(torch.randn(10, 10, 8), 16)
    data = synthetic_binary_set(256, 8, 2, seed=0)
    sae = train_set_bae(data.x * 100.0, 16, steps=3, batch_size=64)  # scale folded in
    assert sae.cfg.normalize_activations == "none"
    est = estimate_entropy(sae, data.x * 100.0)
    assert 0.0 <= est.entropy_bits <= 16.0 and est.n_samples == 256


def test_train_set_bae_normalize_options() -> None:
    with pytest.raises(ValueError, match="normalize='unit'.*'spread'"):
        train_set_bae(torch.randn(64, 4), 8, batch_size=32, normalize="unit")
    with pytest.raises(ValueError, match="not all equal"):
        train_set_bae(torch.ones(64, 4), 8, batch_size=32, normalize="spread")
    x = torch.randn(256, 4) * 0.01 + 100.0  # a large common offset, small differences
    sae = train_set_bae(x, 8, steps=2, batch_size=64, normalize="spread")
    est = estimate_entropy(sae, x)
    assert est.n_samples == 256 and 0.0 < est.entropy_bits <= 8.0  # bits split the members


def test_estimate_entropy_rejects_non_bae() -> None:
    with pytest.raises(ValueError, match="not a BAE"):
        estimate_entropy(torch.nn.Linear(2, 2), torch.zeros(3, 2))


@pytest.fixture(scope="module")
def tiny_model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_vocab=40, act_fn="gelu"
    )
    return HookedTransformer(cfg).eval()


def test_layer_hooks_and_collection(tiny_model: HookedTransformer) -> None:
    assert layer_hooks(tiny_model, [0, 1]) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    with pytest.raises(ValueError, match="layers 0..1"):
        layer_hooks(tiny_model, [2])
    with pytest.raises(ValueError, match="is not a hook of the model"):
        layer_hooks(tiny_model, [0], kind="nonsense")
    tokens = torch.randint(0, 40, (5, 12))
    hooks = ["blocks.0.hook_resid_post"]
    got = collect_hidden_states(tiny_model, tokens, hooks, batch_size=2)
    _, cache = tiny_model.run_with_cache(tokens)
    assert torch.allclose(got[hooks[0]], cache[hooks[0]], atol=1e-6)


def _fake_sdist(path: Path, ground_truth: str) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        data = ground_truth.encode()
        info = tarfile.TarInfo("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))


def test_sentiment_loader(tmp_path: Path) -> None:
    text = "1\t2.5\tgreat film\r\n2\t-3.0\tawful\r\n3\t0.4\tmeh\r\n"
    _fake_sdist(tmp_path / "v.tar.gz", text)
    assert extract_movie_reviews(tmp_path / "v.tar.gz") == text
    file = tmp_path / "reviews.tsv"
    file.write_text(text.replace("\r\n", "\n"))
    assert load_movie_reviews(path=file) == [("great film", 1), ("awful", 0)]
    only_positive = tmp_path / "pos.tsv"
    only_positive.write_text("1\t2.5\tgreat\n2\t0.1\tmeh\n")
    with pytest.raises(ValueError, match="no negative"):
        load_movie_reviews(path=only_positive)
    with pytest.raises(FileNotFoundError, match="sentiment_data fetch"):
        load_movie_reviews(path=tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("just one field\n")
    with pytest.raises(ValueError, match="line 1"):
        load_movie_reviews(path=bad)


def test_cli_has_entropy_subcommand() -> None:
    from bae_lens.cli import SUBCOMMANDS

    assert "entropy" in [name for name, *_ in SUBCOMMANDS]


def test_trained_bae_recovers_the_entropy_of_a_known_set() -> None:
    """r = 3 fair bits in R^16 plus noise: with an entropy price between what a noise bit and
    a true bit are worth (raw units, normalize="none"), the estimate is r; without the entropy
    loss the BAE splits the noise too and the sum of marginals is far above r."""
    data = synthetic_binary_set(2048, 16, 3, noise=0.05, seed=0)
    options = dict(steps=600, batch_size=256, lr=3e-3, normalize="none", outlier_factor=None,
                   covariance_coefficient=0.0, entropy_start_step=100, entropy_warm_up_steps=100)  # fmt: skip
    priced = train_set_bae(data.x, 32, entropy_coefficient=0.03, **options)  # type: ignore[arg-type]
    est = estimate_entropy(priced, data.x)
    assert est.entropy_bits == pytest.approx(3.0, abs=0.3)
    assert est.n_informative == 3
    assert joint_code_entropy(priced, data.x) == pytest.approx(3.0, abs=0.2)
    free = train_set_bae(data.x, 32, entropy_coefficient=0.0, **options)  # type: ignore[arg-type]
    assert estimate_entropy(free, data.x).entropy_bits > 10.0


def test_non_finite_rows_are_dropped_not_allowed_to_empty_the_set() -> None:
    from bae_lens.entropy import drop_outlier_rows

    x = torch.randn(50, 4)
    x[3, 0] = float("nan")
    x[7] = 1e4  # a massive row
    kept = drop_outlier_rows(x)
    assert kept.shape[0] == 48 and torch.isfinite(kept).all()
    assert drop_outlier_rows(x, None).shape[0] == 49  # factor None keeps the massive row
    with pytest.raises(ValueError, match="all 2 rows contain NaN or inf"):
        drop_outlier_rows(torch.full((2, 4), float("nan")))


def test_estimate_stops_at_a_plateau_and_says_it_converged() -> None:
    from bae_lens.entropy import estimate_set_entropy

    data = synthetic_binary_set(2048, 16, 3, noise=0.05, seed=0)
    options = dict(batch_size=256, lr=3e-3, normalize="none", outlier_factor=None,
                   covariance_coefficient=0.0, entropy_coefficient=0.03, check_every=25)  # fmt: skip
    est, sae = estimate_set_entropy(data.x, 32, steps=3000, **options)  # type: ignore[arg-type]
    conv = est.convergence
    assert conv is not None and conv.converged
    assert conv.steps < 3000  # stopped early, at the plateau
    assert conv.held_out_rows == 204  # 10% of the rows, never trained on
    assert est.entropy_bits == pytest.approx(3.0, abs=0.3)
    assert est.to_dict(with_rates=False)["convergence"]["converged"] is True
    hs = [h for _, h, _ in conv.trajectory[-4:]]
    assert (max(hs) - min(hs)) / (sum(hs) / 4) < 0.01


def test_plateau_test_ignores_ev_jitter_but_not_drift() -> None:
    from bae_lens.entropy import ENTROPY_FLOOR_BITS, plateaued

    steps = range(50, 400, 50)  # 7 checks: patience 6 and the one before
    # explained variance jittering by 0.01 around a constant (constant lr), entropy flat
    jitter = [(s, 18.8 + 0.05 * (i % 2), 0.91 + 0.005 * (-1) ** i) for i, s in enumerate(steps)]
    assert plateaued(jitter, 0.01, 0.005, 6)
    # explained variance still rising by 0.003 per check: not a plateau
    rising = [(s, 18.8, 0.90 + 0.003 * i) for i, s in enumerate(steps)]
    assert not plateaued(rising, 0.01, 0.005, 6)
    # spare bits still draining: 0.06 bits per check, 0.36 over the window at ~21 bits
    draining = [(s, 21.1 - 0.06 * i, 0.91) for i, s in enumerate(steps)]
    assert 0.36 > ENTROPY_FLOOR_BITS > 0.01 * 21
    assert not plateaued(draining, 0.01, 0.005, 6)
    assert not plateaued(jitter[:6], 0.01, 0.005, 6)  # too few checks


def test_an_estimate_that_did_not_converge_is_flagged_and_warned(caplog) -> None:
    from bae_lens.entropy import estimate_set_entropy

    data = synthetic_binary_set(2048, 16, 3, noise=0.05, seed=0)
    with caplog.at_level("WARNING", logger="bae_lens.entropy"):
        est, _ = estimate_set_entropy(data.x, 32, steps=40, batch_size=256, lr=3e-3,
                                      normalize="none", check_every=10)  # fmt: skip
    assert est.convergence is not None and not est.convergence.converged
    assert est.convergence.steps == 40
    assert est.to_dict()["convergence"]["converged"] is False
    assert "NOT CONVERGED after 40 steps" in caplog.text


def test_an_unfinished_warm_up_is_never_called_converged() -> None:
    data = synthetic_binary_set(1024, 8, 2, noise=0.05, seed=1)
    sae = train_set_bae(data.x, 16, steps=200, batch_size=128, check_every=10, early_stop=True,
                        entropy_coefficient=0.0, entropy_start_step=10_000)  # fmt: skip
    assert sae.convergence.steps == 200 and not sae.convergence.converged


def test_a_price_that_kills_the_code_is_reported_as_collapsed(caplog) -> None:
    data = synthetic_binary_set(2048, 16, 3, noise=0.05, seed=0)
    with caplog.at_level("WARNING", logger="bae_lens.entropy"):
        sae = train_set_bae(data.x, 32, steps=300, batch_size=256, lr=3e-3, normalize="none",
                            entropy_coefficient=100.0, covariance_coefficient=0.0)  # fmt: skip
    assert sae.convergence.collapsed and sae.convergence.to_dict()["collapsed"] is True
    assert "COLLAPSED" in caplog.text


def _codes_bae(codes: torch.Tensor) -> tuple[BinaryAutoencoderTraining, torch.Tensor]:
    """A BAE whose bit j reads coordinate j of the 0/1 rows ``codes``, and those rows."""
    return identity_bae(codes.shape[1]), codes.float()


def test_tree_bound_removes_the_overcount_of_duplicated_bits() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 2, (20000, 4), generator=gen)
    sae, x = _codes_bae(torch.cat([base, base], dim=1))  # every bit twice: 4 bits of entropy
    est = estimate_entropy(sae, x)
    assert est.entropy_bits == pytest.approx(8.0, abs=0.01)  # the sum of marginals overcounts
    assert est.tree_bound_bits == pytest.approx(4.0, abs=0.01)
    assert est.overshoot_bits == pytest.approx(4.0, abs=0.02)
    assert est.to_dict()["overshoot_lower_bound_bits"] == pytest.approx(4.0, abs=0.02)


def test_tree_bound_is_exact_for_a_noisy_copy_and_near_zero_for_independent_bits() -> None:
    from bae_lens.penalties import binary_entropy_bits

    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 2, (50000, 1), generator=gen)
    flip = (torch.rand(50000, 1, generator=gen) < 0.1).long()
    sae, x = _codes_bae(torch.cat([a, a ^ flip], dim=1))
    est = estimate_entropy(sae, x)
    joint = 1.0 + float(binary_entropy_bits(torch.tensor(0.1)))  # H(a) + H(flip)
    assert est.tree_bound_bits == pytest.approx(joint, abs=0.02)
    sae, x = _codes_bae(torch.randint(0, 2, (50000, 6), generator=gen))
    assert estimate_entropy(sae, x).overshoot_bits == pytest.approx(0.0, abs=0.01)


def test_tree_bound_stays_an_upper_bound_when_dependence_is_not_pairwise() -> None:
    gen = torch.Generator().manual_seed(2)
    ab = torch.randint(0, 2, (40000, 2), generator=gen)
    sae, x = _codes_bae(torch.cat([ab, ab[:, :1] ^ ab[:, 1:]], dim=1))  # c = a xor b
    est = estimate_entropy(sae, x)
    assert joint_code_entropy(sae, x) == pytest.approx(2.0, abs=0.01)
    assert est.tree_bound_bits == pytest.approx(3.0, abs=0.01)  # no pair sees the xor
    assert est.tree_bound_bits >= joint_code_entropy(sae, x)


def test_pairs_are_not_counted_above_the_limit_unless_asked() -> None:
    sae = identity_bae(3)
    x = torch.randint(0, 2, (100, 3)).float()
    assert estimate_entropy(sae, x, count_pairs=False).tree_bound_bits is None
    assert "tree_bound_bits" not in estimate_entropy(sae, x, count_pairs=False).to_dict()
