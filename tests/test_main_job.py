"""The README's main job (`bae-lens train`) on the embedded model and corpus, scaled down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bae_lens.cli import main
from bae_lens.corpus import embedded_corpus_dir

pytestmark = pytest.mark.slow


def test_cli_rejects_unknown_estimator_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--estimator", "tanh", "--output", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "estimator='tanh'" in err and "sigmoid" in err


@pytest.mark.skipif(
    not (embedded_corpus_dir() / "train.jsonl").exists(),
    reason="embedded corpus not prepared: run bash scripts/fetch_corpus.sh",
)
def test_main_job_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--training-tokens", "8192",
            "--batch-tokens", "512",
            "--eval-sequences", "2",
            "--expansion", "2",
            "--threads", "1",
            "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    printed = capsys.readouterr().out
    for name in ("explained variance", "CE loss recovered", "burst L0", "entropy (bits)"):
        assert name in printed
    assert (out / "firing_rates.png").stat().st_size > 1000
    result = json.loads((out / "eval.json").read_text())
    assert result["n_features"] == 2 * 576
    assert len(result["firing_rates"]) == 2 * 576
    # even a few steps reconstruct better than zero ablation and worse than perfect
    assert result["ce_clean"] < result["ce_spliced"] < result["ce_zero_ablation"]
    assert 0.0 < result["explained_variance"] < 1.0
    log = (out / "training_log.jsonl").read_text().splitlines()
    assert len(log) >= 1
    # where the time went: every stage of the main job, with its tokens where it has any
    stages = result["stages"]
    # (8192 tokens are fewer than the norm estimate's 20 batches of 512, which training
    # reuses: no forward pass beyond them, so no "activation generation" stage here)
    for name in ("model load", "tokenisation", "norm estimate",
                 "SAE steps", "eval: clean pass", "eval: zero-ablated pass",
                 "eval: spliced pass", "plotting"):  # fmt: skip
        assert stages[name]["seconds"] >= 0.0, name
    assert stages["SAE steps"]["tokens"] == 8192
    assert stages["eval: clean pass"]["tokens"] == 2 * 128
    assert printed.strip().splitlines()[-1].startswith("time: model load")


@pytest.mark.parametrize(
    "command", ["train", "eval", "compare", "comsem", "import-legacy", "entropy"]
)
def test_every_subcommand_help_renders(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: bae-lens" in capsys.readouterr().out


def test_main_job_on_a_single_local_text_file(tmp_path: Path) -> None:
    """The README's route off Debian: --dataset FILE.txt trains on 95% of its paragraphs and
    evaluates on the other 5%, never on text it trained on."""
    from bae_lens.corpus import load_embedded_corpus, load_text_dataset

    novels = tmp_path / "novels.txt"
    novels.write_text("\n\n".join(load_embedded_corpus("eval")["text"][:60]))
    train = set(load_text_dataset(str(novels), "train")["text"])
    held = set(load_text_dataset(str(novels), "eval")["text"])
    assert held and not train & held
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(novels), "--training-tokens", "4096", "--batch-tokens",
            "512", "--eval-sequences", "2", "--expansion", "1", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "eval.json").read_text())["n_tokens"] > 0
