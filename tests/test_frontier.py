"""The activation cache (float16, memory-mapped, resumable, checked) and the frontier sweep
(resumable, matched-L0 interpolation) on a tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens.activation_cache import CacheKey, build_cache, open_cache, sequences_needed
from bae_lens.frontier import FrontierSettings, Point, default_points, run_frontier
from bae_lens.frontier_report import (
    interpolate_at,
    matched_l0_table,
    place_against_frontier,
    placement_line,
    plot_frontier,
    write_report,
)

HOOK = "blocks.0.hook_resid_post"
CTX = 16


@pytest.fixture(scope="module")
def model(tiny_config: HookedTransformerConfig) -> HookedTransformer:
    torch.manual_seed(0)
    return HookedTransformer(tiny_config).eval()


def _tokens(n: int, seed: int = 1) -> torch.Tensor:
    toks = torch.randint(1, 50, (n, CTX), generator=torch.Generator().manual_seed(seed))
    toks[:, 0] = 0  # BOS
    return toks


def _key(n_rows: int = 300, **kw: object) -> CacheKey:
    fields = {"model": "tiny", "hook": HOOK, "dataset": "random", "split": "train",
              "context_size": CTX, "n_rows": n_rows, "seed": 0} | kw  # fmt: skip
    return CacheKey(**fields)  # type: ignore[arg-type]


def test_cache_holds_the_hook_rows_without_bos_in_float16(model, tmp_path):
    key = _key()
    tokens = _tokens(sequences_needed(key.n_rows, CTX))
    cache = build_cache(model, tokens, key, tmp_path / "c", batch_size=4, progress=False)
    assert cache.rows.dtype == np.float16 and cache.rows.shape == (300, 32)
    assert isinstance(cache.rows, np.memmap)  # read from disk, not loaded
    _, act = model.run_with_cache(tokens[:2], names_filter=[HOOK])
    expected = act[HOOK][:, 1:].reshape(-1, 32)[:20]  # BOS positions are not kept
    got = cache.take(np.arange(20))
    assert torch.allclose(got, expected, atol=2e-3, rtol=2e-3)


def test_cache_is_reused_and_refused_when_the_key_differs(model, tmp_path):
    key = _key()
    tokens = _tokens(sequences_needed(key.n_rows, CTX))
    build_cache(model, tokens, key, tmp_path / "c", progress=False)
    again = open_cache(tmp_path / "c", key)  # another process would do the same
    assert again.n_rows == 300
    with pytest.raises(
        ValueError, match="hook: cache has 'blocks.0.hook_resid_post', asked for 'blocks.1"
    ):
        open_cache(tmp_path / "c", _key(hook="blocks.1.hook_resid_post"))
    with pytest.raises(ValueError, match="model: cache has 'tiny', asked for 'other'"):
        build_cache(model, tokens, _key(model="other"), tmp_path / "c", progress=False)
    with pytest.raises(FileNotFoundError, match="no activation cache"):
        open_cache(tmp_path / "none", key)


def test_killed_cache_build_resumes_to_the_same_rows(model, tmp_path, monkeypatch):
    key = _key()
    tokens = _tokens(sequences_needed(key.n_rows, CTX))
    whole = build_cache(model, tokens, key, tmp_path / "whole", batch_size=2, progress=False)
    calls = {"n": 0}
    real = model.run_with_cache

    def dies_after_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_cache", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_cache(
            model, tokens, key, tmp_path / "part", batch_size=2, flush_every=2, progress=False
        )
    with pytest.raises(ValueError, match="unfinished"):
        open_cache(tmp_path / "part", key)
    monkeypatch.setattr(model, "run_with_cache", real)
    resumed = build_cache(model, tokens, key, tmp_path / "part", batch_size=2, progress=False)
    assert np.array_equal(np.asarray(resumed.rows), np.asarray(whole.rows))


def test_cache_batches_cover_every_row_once_per_epoch(model, tmp_path):
    key = _key(n_rows=120)
    cache = build_cache(
        model, _tokens(sequences_needed(120, CTX)), key, tmp_path / "c", progress=False
    )
    batches = cache.batches(40, seed=3)
    epoch = torch.cat([next(batches) for _ in range(3)])
    assert epoch.shape == (120, 32)
    assert torch.allclose(epoch.sum(0), cache.take(np.arange(120)).sum(0), atol=1e-3)


def test_points_pair_every_bae_price_with_a_random_control() -> None:
    points = default_points({"bae": (0.05, 0.1), "topk": (8,)}, ["bae", "random_bae", "topk"], ())
    names = [p.architecture for p in points]
    assert names.index("random_bae") > names.index("bae")  # controls follow their BAE
    assert {p.setting for p in points if p.architecture == "random_bae"} == {0.05, 0.1}
    with pytest.raises(ValueError, match="among"):
        default_points(None, ["nope"])


def test_bae_variants_differ_from_the_shipped_recipe_only_where_named() -> None:
    from bae_lens.frontier import PREVIOUS_TEMPERATURE, point_config
    from bae_lens.main_job import MAIN_JOB_DEFAULTS

    s = FrontierSettings(hook="blocks.0.hook_resid_post", model_name="tiny")
    shipped = point_config(Point("bae", 0.5), 8, s, None)
    before = point_config(Point("bae_temp1", 0.5), 8, s, None)
    paper = point_config(Point("bae_entropy", 0.05), 8, s, None)
    assert shipped.l0_coefficient == before.l0_coefficient == 0.5
    assert shipped.estimator_temperature == MAIN_JOB_DEFAULTS["estimator_temperature"] != 1.0
    assert before.estimator_temperature == PREVIOUS_TEMPERATURE == 1.0
    assert (paper.l0_coefficient, paper.entropy_coefficient) == (0.0, 0.05)
    assert paper.estimator_temperature == PREVIOUS_TEMPERATURE  # as its points were trained
    others = {"estimator_temperature", "metadata"}  # the metadata records the same options
    assert {k: v for k, v in vars(before).items() if k not in others} == {
        k: v for k, v in vars(shipped).items() if k not in others
    }
    # random-code controls pair with the shipped recipe's prices, not the ablation's
    grid = {"bae": (0.2,), "bae_temp1": (0.5, 1.0)}
    points = default_points(grid, ["bae", "bae_temp1", "random_bae"], ())
    assert [(p.architecture, p.setting) for p in points if p.architecture == "random_bae"] == [
        ("random_bae", 0.2)
    ]
    assert {p.setting for p in points if p.architecture == "bae_temp1"} == {0.5, 1.0}


def test_a_saved_point_trained_with_other_options_is_refused(tmp_path: Path) -> None:
    from bae_lens.frontier import check_point_is_current, point_config

    s = FrontierSettings(hook="blocks.0.hook_resid_post", model_name="tiny")
    point = Point("bae", 0.5)
    now = point_config(point, 8, s, None)
    saved = now.get_inference_sae_cfg_dict()
    (tmp_path / "cfg.json").write_text(json.dumps(saved))
    check_point_is_current(point, tmp_path, now)  # the same options: reused
    # an option the code added after the point was trained is not held against it
    del saved["metadata"]["training_architecture_details"]["l0_warm_up_steps"]
    (tmp_path / "cfg.json").write_text(json.dumps(saved))
    check_point_is_current(point, tmp_path, now)
    # a default that changed since: refused, naming the option and both values
    saved["metadata"]["training_architecture_details"]["covariance_penalty"] = "frobenius"
    (tmp_path / "cfg.json").write_text(json.dumps(saved))
    with pytest.raises(
        ValueError, match="covariance_penalty: saved 'frobenius', now 'frobenius_probe'"
    ):
        check_point_is_current(point, tmp_path, now)
    topk = Point("topk", 16)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "k": 32}))
    with pytest.raises(ValueError, match="k: saved 32, now 16"):
        check_point_is_current(topk, tmp_path, point_config(topk, 8, s, None))


def test_interpolation_on_log_l0_and_no_extrapolation() -> None:
    curve = [{"l0": 10.0, "kl_spliced": 1.0}, {"l0": 1000.0, "kl_spliced": 0.0}]
    assert interpolate_at(curve, 100.0, "kl_spliced") == pytest.approx(0.5)  # halfway in log
    assert interpolate_at(curve, 5.0, "kl_spliced") is None
    assert interpolate_at(curve, 2000.0, "kl_spliced") is None


def test_a_dictionary_is_placed_against_the_frontier_topk_curve() -> None:
    def m(l0: float, kl: float) -> dict:
        return {"point": {"architecture": "topk", "setting": l0, "seed": 42}, "l0": l0,
                "kl_spliced": kl}  # fmt: skip

    frontier = {"cache": {"key": {"model": "m", "hook": "h"}},
                "results": {"a": m(10, 0.4), "b": m(1000, 0.2)}}  # fmt: skip
    placed = place_against_frontier(frontier, "m", "h", 100.0, 0.6)
    assert placed["frontier_kl"] == pytest.approx(0.3)
    assert placed["kl_ratio"] == pytest.approx(2.0)
    assert "2.00x" in placement_line(placed)
    outside = place_against_frontier(frontier, "m", "h", 5000.0, 0.6)
    assert "outside" in outside["reason"] and "frontier_kl" not in outside
    assert "not m2 h" in place_against_frontier(frontier, "m2", "h", 100.0, 0.6)["reason"]
    assert "no comparison" in placement_line(outside)


def test_sweep_trains_evaluates_and_resumes_without_retraining(model, tmp_path):
    key = _key(n_rows=2048)
    cache = build_cache(
        model, _tokens(sequences_needed(2048, CTX)), key, tmp_path / "c", progress=False
    )
    held_out = _tokens(8, seed=9)
    settings = FrontierSettings(hook=HOOK, model_name="tiny", expansion=2, training_tokens=1024,
                                batch_tokens=128, n_batches_for_norm_estimate=2)  # fmt: skip
    points = [Point("topk", 4), Point("topk", 16), Point("bae", 0.05), Point("random_bae", 0.05)]
    results = run_frontier(
        model, cache, held_out, points[:2], settings, tmp_path / "w", eval_batch_size=4
    )
    assert set(results) == {p.name for p in points[:2]}
    assert results[points[0].name]["l0"] == pytest.approx(4.0)
    cfg = tmp_path / "w" / "points" / points[0].name / "cfg.json"
    trained_at = cfg.stat().st_mtime_ns
    results = run_frontier(
        model, cache, held_out, points, settings, tmp_path / "w", eval_batch_size=4
    )
    assert cfg.stat().st_mtime_ns == trained_at  # not retrained
    assert set(results) == {p.name for p in points}
    for m in results.values():
        assert m["eval_tokens"] == held_out.numel() and 0.0 < m["kl_spliced"] < math.inf
    table = matched_l0_table(results, l0s=(8,))
    assert table["topk"]["L0=8"]["kl_spliced"] is not None
    write_report(results, tmp_path / "out", {"note": "test"}, "tiny")
    saved = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert set(saved["results"]) == set(results)
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 1000
    assert "| topk |" in (tmp_path / "out" / "frontier.md").read_text()


def test_plot_handles_a_second_seed(tmp_path: Path) -> None:
    def m(arch: str, l0: float, kl: float, seed: int = 42) -> dict:
        return {"point": {"architecture": arch, "setting": 1.0, "seed": seed}, "l0": l0,
                "kl_spliced": kl, "explained_variance": 0.5, "n_dense": {"0.1": 3}}  # fmt: skip

    results = {"a": m("topk", 10, 0.5), "b": m("topk", 100, 0.1), "c": m("topk", 30, 0.3, 43)}
    plot_frontier(results, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_two_builders_of_one_cache_build_it_once(model, tmp_path, monkeypatch):
    import threading
    import time

    key = _key(n_rows=150)
    tokens = _tokens(sequences_needed(150, CTX))
    real = model.run_with_cache
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_cache", slow)
    caches = []

    def build() -> None:
        caches.append(build_cache(model, tokens, key, tmp_path / "c", batch_size=2, progress=False))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(caches) == 2
    assert len(calls) == math.ceil(sequences_needed(150, CTX) / 2)  # one build's forwards
    assert np.array_equal(np.asarray(caches[0].rows), np.asarray(caches[1].rows))


def test_frontier_job_end_to_end_on_the_embedded_model(tmp_path: Path) -> None:
    """Model, a local text corpus smaller than the budget (cached whole), the sweep, and a
    report that gathers points of every sweep in the work folder."""
    from bae_lens.corpus import load_embedded_corpus
    from bae_lens.frontier import frontier_job

    text = tmp_path / "novels.txt"
    text.write_text("\n\n".join(load_embedded_corpus("eval")["text"][:40]))
    settings = FrontierSettings(hook="blocks.0.hook_resid_post", model_name="smollm2-135m-instruct",
                                expansion=1, training_tokens=10**6, batch_tokens=256,
                                n_batches_for_norm_estimate=2)  # fmt: skip
    common = {"model_name": None, "hook": settings.hook, "dataset": str(text),
              "settings": settings, "eval_tokens": 256, "work_dir": tmp_path / "w",
              "output": tmp_path / "out", "cache_dir": tmp_path / "cache", "eval_every": 1}  # fmt: skip
    settings.training_tokens = 4096
    first = frontier_job(points=[Point("topk", 8)], **common)  # type: ignore[arg-type]
    assert first["cache"]["key"]["n_rows"] == 4096 and first["epochs_per_point"] == 1.0
    second = frontier_job(points=[Point("topk", 16)], **common)  # type: ignore[arg-type]
    assert set(second["results"]) == {Point("topk", 8).name, Point("topk", 16).name}
    saved = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert set(saved["results"]) == set(second["results"])


def test_target_lines_compare_the_bae_with_topk_and_its_random_control() -> None:
    from bae_lens.frontier_report import target_lines

    table = {
        "bae": {"L0=64": {"kl_spliced": 0.3, "n_dense_0.1": 40.0}},
        "topk": {"L0=64": {"kl_spliced": 0.2, "n_dense_0.1": 100.0}},
        "random_bae": {"L0=64": {"kl_spliced": 0.5, "n_dense_0.1": 0.0}},
    }
    (line,) = target_lines(table, (64,))
    assert "KL 1.50x TopK's" in line and "40 vs TopK's 100" in line
    assert "KL 40% below the random control's (meets the 25% target)" in line
    table["random_bae"]["L0=64"]["kl_spliced"] = 0.35
    assert "misses" in target_lines(table, (64,))[0]
    assert target_lines({"topk": table["topk"]}, (64,)) == []


def test_closing_line_counts_this_runs_points_not_the_whole_report() -> None:
    from bae_lens.cli.frontier import evaluated_line

    results = {"topk_k32_seed42": {}, "bae_l0_coefficient0.2_seed42": {}, "other": {}}
    line = evaluated_line(results, ["topk_k32_seed42", "topk_k16_seed42"], "out")
    assert line.startswith("1 of this run's 2 points evaluated")
    assert "holds 3 evaluated points" in line


def test_the_default_sweep_leaves_out_the_ablations() -> None:
    import argparse

    from bae_lens.cli.frontier import add_arguments
    from bae_lens.frontier_report import ABLATIONS, ARCHITECTURES

    p = argparse.ArgumentParser()
    add_arguments(p)
    chosen = p.parse_args([]).architectures.split(",")
    assert "bae_temp1" in ABLATIONS and not set(chosen) & set(ABLATIONS)
    assert set(chosen) | set(ABLATIONS) == set(ARCHITECTURES)
    assert p.parse_args(["--architectures", "bae_temp1"]).architectures == "bae_temp1"
