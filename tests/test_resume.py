"""A run killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends (tiny random HookedTransformer, pre-tokenized data)."""

from __future__ import annotations

import json
import logging
import os
import random
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bae_lens.resume import (
    RESUME_MARKER_FILENAME,
    check_checkpoint,
    latest_checkpoint,
)

SCRIPT = """
import sys, time
import torch
from datasets import Dataset
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig
import bae_lens
from bae_lens.resume import train_sae_resumable


def main(out, ckpt, slow=0.0):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=16, d_head=4, n_heads=4,
                                  d_vocab=50, act_fn="gelu", normalization_type="LN")
    model = HookedSAETransformer(cfg)
    model.requires_grad_(False)
    if slow:  # slow the LLM down so that the parent can kill us mid-run
        model.blocks[0].hook_resid_post.add_hook(lambda act, hook: time.sleep(slow))
    ds = Dataset.from_dict({"input_ids": torch.randint(0, 50, (300, 16)).tolist()})
    sae_cfg = bae_lens.BinaryAutoencoderTrainingConfig(
        d_in=16, d_sae=32, entropy_coefficient=0.1, covariance_coefficient=1.0,
        covariance_penalty="frobenius_probe", log_every=1)
    train_sae_resumable(model, ds, sae_cfg, "blocks.0.hook_resid_post", out,
                        checkpoint_dir=ckpt, n_checkpoints=5, training_tokens=128 * 48,
                        train_batch_size_tokens=128, context_size=16,
                        store_batch_size_prompts=4, exclude_special_tokens=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


def _start(script: Path, out: Path, ckpt: Path, slow: float) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, str(script), str(out), str(ckpt), str(slow)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _log(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (path / "training_log.jsonl").read_text().splitlines()]


def test_sigkilled_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ckpt"
    killed = _start(script, tmp_path / "killed", ckpt, slow=0.05)
    # the uninterrupted reference, in this process, while the child starts up
    main = runpy.run_path(str(script), run_name="reference")["main"]
    main(str(tmp_path / "reference"), str(tmp_path / "reference_ckpt"))
    deadline = time.time() + 150
    while latest_checkpoint(ckpt) is None:
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.time() < deadline, "no checkpoint within 150 s"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))  # a random step after the first checkpoint
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert not (tmp_path / "killed" / "training_log.jsonl").exists()
    start = latest_checkpoint(ckpt)
    assert start is not None
    done_steps = check_checkpoint(start)["n_training_steps"]
    assert 0 < done_steps < 48

    with caplog.at_level(logging.INFO):
        main(str(tmp_path / "resumed"), str(ckpt))  # the killed run's call: it resumes
    assert f"Resuming from checkpoint: {start}" in caplog.text

    ref = load_file(tmp_path / "reference" / "sae_weights.safetensors")
    got = load_file(tmp_path / "resumed" / "sae_weights.safetensors")
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-6, rtol=1e-5)
    ref_log, got_log = _log(tmp_path / "reference"), _log(tmp_path / "resumed")
    assert [r["step"] for r in got_log] == list(range(48))
    for a, b in zip(ref_log, got_log, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_incomplete_or_unsafe_checkpoints_are_refused(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_checkpoint(tmp_path / "missing")
    partial = tmp_path / "run" / "1024"
    partial.mkdir(parents=True)
    (partial / "sae_weights.safetensors").write_bytes(b"")
    (partial / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="incomplete"):
        check_checkpoint(partial)
    assert latest_checkpoint(tmp_path / "run") is None

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"optimizer": Exploit()}, partial / "trainer_state.pt")
    (partial / RESUME_MARKER_FILENAME).write_text(json.dumps({"n_training_steps": 8}))
    with pytest.raises(ValueError, match="weights_only=True"):
        check_checkpoint(partial)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("column", "warned"), [("text", True), ("input_ids", False)])
def test_resume_on_a_text_dataset_warns_that_it_is_not_exact(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    column: str,
    warned: bool,
) -> None:
    from datasets import Dataset

    import bae_lens.resume as resume
    import bae_lens.train as train

    monkeypatch.setattr(resume, "latest_checkpoint", lambda directory: tmp_path / "ckpt")
    monkeypatch.setattr(train, "train_sae", lambda *args, **kwargs: kwargs)
    data = Dataset.from_dict({column: ["a b c"] if column == "text" else [[1, 2, 3]]})
    with caplog.at_level(logging.WARNING, logger="bae_lens.resume"):
        kwargs = resume.train_sae_resumable(
            None, data, None, "h", tmp_path, checkpoint_dir=tmp_path
        )
    assert kwargs["resume_from_checkpoint"] == str(tmp_path / "ckpt")
    assert ("on a text dataset: not exact" in caplog.text) is warned
