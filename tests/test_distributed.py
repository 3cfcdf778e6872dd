"""Data-parallel training: 2 gloo processes == 1 process with the doubled batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bae_lens.collectives import global_firing_rates, shard_rows
from bae_lens.distributed import build_arg_parser, iterate_batches, run

ARGS = [
    "--batch-size",
    "128",
    "--steps",
    "16",
    "--log-every",
    "1",
    "--expansion",
    "2",
    "--entropy-coefficient",
    "0.1",
    "--covariance-coefficient",
    "1.0",
    "--covariance-penalty",
    "abs",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_two_gloo_ranks_match_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(512, 16, generator=g) @ torch.randn(16, 16, generator=g)
    save_file({"activations": acts}, str(tmp_path / "acts.safetensors"))
    common = ["--activations", str(tmp_path / "acts.safetensors"), *ARGS]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--standalone", "-m", "bae_lens.distributed"]
    proc = subprocess.run(
        [*cmd, *common, "--output", str(tmp_path / "two")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the reference: this process, no process group, each step the whole global batch
    run(build_arg_parser().parse_args([*common, "--output", str(tmp_path / "one")]))

    one, two = tmp_path / "one", tmp_path / "two"
    w1, w2 = load_file(one / "sae_weights.safetensors"), load_file(two / "sae_weights.safetensors")
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)
    l1, l2 = (json.loads((d / "losses.json").read_text()) for d in (one, two))
    assert len(l1) == len(l2) == 16
    for a, b in zip(l1, l2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["entropy_loss"] == pytest.approx(b["entropy_loss"], rel=1e-5)
    assert l1[-1]["mse_loss"] < l1[0]["mse_loss"]
    # the training log holds GLOBAL code statistics on every rank count
    t1, t2 = (
        [json.loads(line) for line in (d / "training_log.jsonl").read_text().splitlines()]
        for d in (one, two)
    )
    for a, b in zip(t1, t2, strict=True):
        for key in ("entropy_bits", "l0", "mse_loss", "covariance_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_shards_concatenate_to_the_batch_and_streams_repeat() -> None:
    batch = torch.arange(12.0).reshape(6, 2)
    torch.testing.assert_close(torch.cat([shard_rows(batch, r, 3) for r in range(3)]), batch)
    with pytest.raises(ValueError, match="multiple of the world size"):
        shard_rows(batch, 0, 4)
    acts = torch.randn(10, 3)
    first = list(iterate_batches(acts, 4, 5, seed=1))
    again = list(iterate_batches(acts, 4, 5, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len(first) == 5 and first[0].shape == (4, 3)
    bits = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(global_firing_rates(bits), torch.tensor([1.0, 0.5]))
