"""benchmarks/saebench_core.py: importable without SAEBench, options checked before loading,
and a clear exit where SAEBench is missing. (Its run against SAEBench itself is recorded
in benchmarks/results/saebench/, made in a venv that has it; see the README.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "saebench_core.py"


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("saebench_core", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need sae_bench at import
    return module


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    BinaryAutoencoder(BinaryAutoencoderConfig(d_in=4, d_sae=8)).save_model(tmp_path / "bae")
    return tmp_path / "bae"


def test_defaults(recipe: ModuleType, saved: Path) -> None:
    args = recipe.parse_args([str(saved)])
    assert (args.model, args.dataset, args.view, args.device) == (None, "embedded", "code", "cpu")
    assert (args.context_size, args.batch_size_prompts) == (128, 4)
    assert (args.reconstruction_batches, args.sparsity_batches) == (4, 4)
    args = recipe.parse_args([str(saved), "--model", "gpt2", "--dataset", "org/data",
                              "--view", "margin", "--sparsity-batches", "7"])  # fmt: skip
    assert (args.model, args.dataset, args.view, args.sparsity_batches) == (
        "gpt2", "org/data", "margin", 7
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{sae}", "--context-size", "1"], "--context-size 1: must be >= 2"),
        (["{sae}", "--reconstruction-batches", "0"], "--reconstruction-batches 0: must be >= 1"),
        (["{sae}", "--view", "burst"], "invalid choice: 'burst'"),
        (["{tmp}/none"], "none: no cfg.json there; give a saved SAE folder"),
    ],
)
def test_bad_options_exit_2_before_loading(
    recipe: ModuleType, saved: Path, argv: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as info:
        recipe.parse_args([a.format(sae=saved, tmp=saved.parent) for a in argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_without_saebench_it_says_so(
    recipe: ModuleType, saved: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "sae_bench", None)  # import fails as when not installed
    assert recipe.main([str(saved)]) == 2
    assert "sae-bench is not importable here" in capsys.readouterr().err
