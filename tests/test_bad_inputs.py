"""Bad input across the public API and CLI: a clear error that names the value.

Each case must raise the stated exception with a message matching ``match`` (the bad
value or path, and what is wrong), raised by bae_lens's or SAELens's own validation
rather than from deep inside torch, json, safetensors or datasets. Cases marked xfail
are known gaps in modules outside this suite's owner (see each reason); strict, so they
fail loudly once fixed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from sae_lens import (
    HookedSAETransformer,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
)
from safetensors.torch import save_file
from transformer_lens import HookedTransformerConfig

import bae_lens
from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig
from bae_lens import BinaryAutoencoderTrainingConfig as TrainCfg
from bae_lens.cli import main as cli_main
from bae_lens.collectives import shard_rows
from bae_lens.corpus import load_data
from bae_lens.distributed import iterate_batches, load_activations
from bae_lens.distributed import main as distributed_main
from bae_lens.io import load_bae, load_sae
from bae_lens.legacy import convert_legacy_state_dict, import_legacy_model
from bae_lens.legacy import load_legacy_hidden_states as hidden
from bae_lens.resume import check_checkpoint, train_sae_resumable
from bae_lens.train import train_sae

HOOK = "blocks.0.hook_resid_post"


@dataclass
class Ctx:
    tmp: Path
    model: HookedSAETransformer


@pytest.fixture(scope="module")
def tiny_model() -> HookedSAETransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=20, act_fn="gelu"
    )
    return HookedSAETransformer(cfg)


def _bae() -> BinaryAutoencoder:
    return BinaryAutoencoder(BinaryAutoencoderConfig(d_in=8, d_sae=16))


def _saved(tmp: Path, name: str = "sae") -> Path:
    path = tmp / name
    _bae().save_model(path)
    return path


def _edit_cfg(tmp: Path, **changes: Any) -> Path:
    path = _saved(tmp)
    cfg = json.loads((path / "cfg.json").read_text())
    cfg.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        cfg.pop(key)
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path, n_bytes: int) -> Path:
    path.write_bytes(path.read_bytes()[:n_bytes])
    return path


def _truncated(tmp: Path) -> Path:
    path = _saved(tmp)
    _truncate(path / "sae_weights.safetensors", 40)
    return path


def _standard(tmp: Path) -> Path:
    StandardSAE(StandardSAEConfig(d_in=8, d_sae=16)).save_model(tmp / "standard")
    return tmp / "standard"


def _bae_run_claiming_standard(tmp: Path) -> Path:
    """A BAE's folder whose cfg.json was rewritten as a standard SAE's (no BAE field left);
    only runner_cfg.json still says what trained the weights."""
    path = _saved(tmp)
    cfg = json.loads((path / "cfg.json").read_text())
    keep = {f.name for f in dataclasses.fields(StandardSAEConfig)}
    standard = {k: v for k, v in cfg.items() if k in keep} | {"architecture": "standard"}
    (path / "cfg.json").write_text(json.dumps(standard))
    runner = {"sae": TrainCfg(d_in=8, d_sae=16).to_dict() | {"architecture": "bae"}}
    (path / "runner_cfg.json").write_text(json.dumps(runner))
    return path


def _jumprelu_claiming_standard(tmp: Path) -> Path:
    JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=16)).save_model(tmp / "jumprelu")
    cfg = json.loads((tmp / "jumprelu" / "cfg.json").read_text()) | {"architecture": "standard"}
    (tmp / "jumprelu" / "cfg.json").write_text(json.dumps(cfg))
    return tmp / "jumprelu"


def _pickle(tmp: Path, obj: Any, name: str = "x.pkl") -> Path:
    with open(tmp / name, "wb") as f:
        pickle.dump(obj, f)
    return tmp / name


def _acts(tmp: Path, **tensors: torch.Tensor) -> Path:
    save_file(tensors, str(tmp / "acts.safetensors"))
    return tmp / "acts.safetensors"


def _legacy_sd(**changes: Any) -> dict[str, Any]:
    sd: dict[str, Any] = {
        "encoder.weight": torch.zeros(16, 4),
        "encoder.bias": torch.zeros(16),
        "decoder.weight": torch.zeros(4, 16),
    }
    return {**sd, **changes}


def _train(ctx: Ctx, ds: Dataset | None = None, hook: str = HOOK, **kw: Any) -> Any:
    ds = ds if ds is not None else Dataset.from_dict({"input_ids": [[1] * 8] * 4})
    return train_sae(ctx.model, ds, TrainCfg(d_in=8, d_sae=16), hook, ctx.tmp / "out", **kw)


def _gap(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


Call = Callable[[Ctx], Any]


def _nan_weight_step() -> Any:
    """One BAE training step at step 3 after a weight turned NaN (as a diverging run's do)."""
    from sae_lens.saes.sae import TrainStepInput

    sae = bae_lens.BinaryAutoencoderTraining(TrainCfg(d_in=8, d_sae=16, init_firing_rate=None))
    with torch.no_grad():
        sae.W_dec[2, 1] = float("nan")
    coefficients = {"entropy": 0.0, "covariance": 0.0}
    return sae.training_forward_pass(
        TrainStepInput(torch.randn(16, 8), coefficients, None, 3, False)
    )


CASES: list[tuple[str, Call, type[Exception], str]] = [
    # --- configuration values
    ("d_in zero", lambda c: TrainCfg(d_in=0, d_sae=4), ValueError, "d_in=0"),
    ("d_sae negative", lambda c: TrainCfg(d_in=4, d_sae=-4), ValueError, "d_sae=-4"),
    ("bits float", lambda c: TrainCfg(d_in=4, d_sae=4, bits_per_feature=2.5), ValueError, "2.5"),
    ("estimator", lambda c: TrainCfg(d_in=4, d_sae=4, estimator="tanh"), ValueError, "'tanh'"),
    (
        "covariance penalty",
        lambda c: TrainCfg(d_in=4, d_sae=4, covariance_penalty="l1"),
        ValueError,
        "covariance_penalty='l1'",
    ),
    (
        "entropy reduction",
        lambda c: TrainCfg(d_in=4, d_sae=4, entropy_reduction="max"),
        ValueError,
        "entropy_reduction='max'",
    ),
    (
        "negative coefficient",
        lambda c: TrainCfg(d_in=4, d_sae=4, entropy_coefficient=-1.0),
        ValueError,
        "entropy_coefficient=-1.0",
    ),
    (
        "temperature zero",
        lambda c: TrainCfg(d_in=4, d_sae=4, estimator_temperature=0.0),
        ValueError,
        "estimator_temperature=0.0",
    ),
    (
        "firing rate out of range",
        lambda c: TrainCfg(d_in=4, d_sae=4, init_firing_rate=1.5),
        ValueError,
        "init_firing_rate=1.5",
    ),
    (
        "output activation",
        lambda c: BinaryAutoencoderConfig(d_in=4, d_sae=4, output_activation="gelu"),  # type: ignore[arg-type]
        ValueError,
        "output_activation='gelu'",
    ),
    (
        "square-wave period zero",
        lambda c: BinaryAutoencoderConfig(d_in=4, d_sae=4, square_wave_period=0.0),
        ValueError,
        "square_wave_period=0.0",
    ),
    # --- tensors given to the model
    ("input width", lambda c: _bae().encode(torch.randn(3, 5)), ValueError, r"\(3, 5\).*d_in=8"),
    (
        "NaN input",
        lambda c: _bae().encode(torch.full((2, 8), float("nan"))),
        ValueError,
        "16 non-finite",
    ),
    ("inf input", lambda c: _bae()(torch.tensor([[float("inf")] * 8])), ValueError, "non-finite"),
    # --- saved dictionaries
    ("missing directory", lambda c: load_bae(c.tmp / "nope"), FileNotFoundError, "nope"),
    ("file not directory", lambda c: load_sae(_pickle(c.tmp, 1)), ValueError, "x.pkl.*is a file"),
    (
        "no cfg.json",
        lambda c: load_sae(_write(c.tmp / "empty", "notes.txt", "")),
        FileNotFoundError,
        "cfg.json",
    ),
    (
        "cfg.json not JSON",
        lambda c: load_sae(_write(_saved(c.tmp), "cfg.json", "{d_in: 8")),
        ValueError,
        "cfg.json.*not valid JSON",
    ),
    (
        "unknown architecture",
        lambda c: load_sae(_edit_cfg(c.tmp, architecture="bae2")),
        ValueError,
        "architecture='bae2' is not one of",
    ),
    ("cfg without d_sae", lambda c: load_sae(_edit_cfg(c.tmp, d_sae=None)), ValueError, "'d_sae'"),
    ("d_in a string", lambda c: load_sae(_edit_cfg(c.tmp, d_in="8")), ValueError, "d_in='8'"),
    (
        "invalid value in cfg.json",
        lambda c: load_sae(_edit_cfg(c.tmp, binarization="ternary")),
        ValueError,
        "binarization='ternary'",
    ),
    (
        "truncated safetensors",
        lambda c: load_sae(_truncated(c.tmp)),
        ValueError,
        "sae_weights.safetensors.*truncated",
    ),
    (
        "weights do not match cfg",
        lambda c: load_sae(_edit_cfg(c.tmp, d_sae=32)),
        ValueError,
        r"has shape .*d_sae=32.* needs",
    ),
    (
        "another architecture",
        lambda c: load_bae(_standard(c.tmp)),
        ValueError,
        "architecture='standard', expected 'bae'",
    ),
    ("bad device", lambda c: load_sae(_saved(c.tmp), device="gpu0"), ValueError, "'gpu0'"),
    (
        "cfg.json says standard over a BAE's weights",
        lambda c: load_sae(_edit_cfg(c.tmp, architecture="standard")),
        ValueError,
        r"architecture='standard', but it holds \[.*'binarization'.*fields of \['bae'",
    ),
    (
        "runner_cfg.json says the BAE trained the weights",
        lambda c: load_sae(_bae_run_claiming_standard(c.tmp)),
        ValueError,
        "architecture='standard', but runner_cfg.json says the weights were trained as a "
        "dictionary saved as 'bae'",
    ),
    (
        "weights with a tensor the architecture lacks",
        lambda c: load_sae(_jumprelu_claiming_standard(c.tmp)),
        ValueError,
        r"holds \['threshold'\], which architecture 'standard' has not",
    ),
    # --- training
    (
        "hook the model lacks",
        lambda c: _train(c, hook="blocks.7.hook_resid_post"),
        ValueError,
        "blocks.7.hook_resid_post",
    ),
    (
        "empty corpus",
        lambda c: _train(c, ds=Dataset.from_dict({"input_ids": []})),
        ValueError,
        "empty",
    ),
    ("too few tokens", lambda c: _train(c, training_tokens=10), ValueError, "training_tokens=10"),
    (
        "SAE sized from d_model at an MLP hook",
        lambda c: _train(c, hook="blocks.0.mlp.hook_post"),
        ValueError,
        "'blocks.0.mlp.hook_post' carries 32 values per token but the SAE has d_in=8",
    ),
    (
        "no checkpoints",
        lambda c: train_sae_resumable(
            c.model, None, None, HOOK, c.tmp, checkpoint_dir=c.tmp, n_checkpoints=0
        ),
        ValueError,
        "n_checkpoints=0",
    ),
    (
        "resume from a non-checkpoint",
        lambda c: check_checkpoint(_saved(c.tmp)),
        ValueError,
        "incomplete: no trainer_state.pt",
    ),
    # --- released files
    (
        "missing released model",
        lambda c: import_legacy_model(c.tmp / "m.pt"),
        FileNotFoundError,
        "m.pt",
    ),
    (
        "checkpoint of another architecture as released model",
        lambda c: convert_legacy_state_dict(_bae().state_dict()),
        ValueError,
        "unexpected.*W_enc",
    ),
    (
        "integer released weights",
        lambda c: convert_legacy_state_dict(_legacy_sd(**{"encoder.bias": torch.zeros(16).long()})),
        ValueError,
        "encoder.bias must be finite floating-point",
    ),
    (
        "truncated pickle",
        lambda c: hidden(_truncate(_pickle(c.tmp, [torch.ones(4)]), 20)),
        ValueError,
        "x.pkl.*not a readable pickle",
    ),
    (
        "malicious pickle",
        lambda c: hidden(_pickle(c.tmp, _Exploit())),
        ValueError,
        r"refusing to load \w+\.system",
    ),
    ("empty hidden states", lambda c: hidden(_pickle(c.tmp, [])), ValueError, "non-empty list"),
    (
        "ragged hidden states",
        lambda c: hidden(_pickle(c.tmp, [torch.ones(4), torch.ones(5)])),
        ValueError,
        r"different sizes \[4, 5\]",
    ),
    (
        "NaN hidden states",
        lambda c: hidden(_pickle(c.tmp, [torch.tensor([1.0, float("nan")])])),
        ValueError,
        "NaN",
    ),
    (
        "layer out of range",
        lambda c: hidden(_pickle(c.tmp, [[torch.ones(4)]] * 2), layer=5),
        ValueError,
        "layer=5 is out of range for 2 layers",
    ),
    # --- activation streams for data-parallel training
    ("missing activations", lambda c: load_activations(c.tmp / "a.st"), FileNotFoundError, "a.st"),
    (
        "activations under another name",
        lambda c: load_activations(_acts(c.tmp, acts=torch.ones(4, 2))),
        ValueError,
        "no tensor 'activations'",
    ),
    (
        "1-D activations",
        lambda c: load_activations(_acts(c.tmp, activations=torch.ones(4))),
        ValueError,
        r"shape \(4,\)",
    ),
    (
        "batch larger than data",
        lambda c: next(iterate_batches(torch.ones(4, 2), 8, 1)),
        ValueError,
        "batch_size=8",
    ),
    ("uneven shards", lambda c: shard_rows(torch.ones(5, 2), 0, 2), ValueError, "5 rows"),
    # --- formerly known gaps, fixed in bae.py and corpus.py
    pytest.param(  # type: ignore[list-item]
        "non-tensor input",
        lambda c: _bae().encode([[0.0] * 8]),  # type: ignore[arg-type]
        TypeError,
        "Tensor.*list",
    ),
    pytest.param(  # type: ignore[list-item]
        "complex input",
        lambda c: _bae().encode(torch.ones(2, 8, dtype=torch.complex64)),
        ValueError,
        "complex",
    ),
    (
        "binary dataset file",
        lambda c: load_data(str(_write_bytes(c.tmp / "b.txt", b"PK\x03\x04\0\0\x14")), "train"),
        ValueError,
        r"b.txt' holds NUL bytes \(a binary file\?\)",
    ),
    (
        "broken JSON lines",
        lambda c: load_data(
            str(_write(c.tmp, "d.jsonl", '{"text": "a"}\n{"text": \n') / "d.jsonl"), "all"
        ),
        ValueError,
        r"d.jsonl' could not be read as json \(ArrowInvalid",
    ),
    (
        "a loss that turns non-finite mid-run",
        lambda c: _nan_weight_step(),
        FloatingPointError,
        r"step 3: the loss is not finite \(mse_loss (nan|inf)",
    ),
    pytest.param(  # type: ignore[list-item]
        "empty text corpus",
        lambda c: __import__("bae_lens.corpus", fromlist=["_"]).load_text_dataset(
            str(_write(c.tmp, "e.txt", "") / "e.txt"), "train"
        ),
        ValueError,
        "e.txt.*empty",
    ),
]


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo should-never-run",))


def _case_id(case: Any) -> str:
    values = case.values if hasattr(case, "values") else case
    return str(values[0]).replace(" ", "-")


@pytest.mark.parametrize(
    ("name", "call", "error", "match"), CASES, ids=[_case_id(case) for case in CASES]
)
def test_bad_input_gives_a_clear_error(
    name: str,
    call: Call,
    error: type[Exception],
    match: str,
    tmp_path: Path,
    tiny_model: HookedSAETransformer,
) -> None:
    with pytest.raises(error, match=match) as info:
        call(Ctx(tmp_path, tiny_model))
    raised_in = str(info.traceback[-1].path)
    assert "bae_lens" in raised_in or "sae_lens" in raised_in, f"raised in {raised_in}"


CLI_CASES = [
    (["import-legacy", "--model", "{tmp}/none.pt", "--output", "{tmp}/o"], "none.pt"),
    (["import-legacy", "--model", "{tmp}/evil.pkl", "--output", "{tmp}/o"], "weights-only"),
    (["train", "--estimator", "bogus"], "estimator='bogus'"),
    (["train", "--covariance-penalty", "l2"], "covariance_penalty='l2'"),
    (["entropy", "--sae", "{tmp}/bae", "--layers", "1,2"], "--sae takes one layer"),
    (["entropy", "--layers", "99", "--output", "{tmp}/e.json"], "the model has layers 0..29"),
    (["entropy", "--icl", "--auto-price", "--output", "{tmp}/e.json"], "--auto-price with --icl"),
    # options checked before the model loads, named as typed
    (["train", "--expansion", "-1"], "--expansion -1: must be >= 1"),
    (["train", "--batch-tokens", "0"], "--batch-tokens 0: must be >= 2"),
    (["train", "--context-size", "0"], "--context-size 0: must be >= 2"),
    (["train", "--threads", "0"], "--threads 0: must be >= 1"),
    (["train", "--lr", "nan"], "--lr nan: must be a finite number > 0"),
    (["train", "--device", "bogus"], "--device bogus: not a torch device"),
    (["train", "--training-tokens", "100"], "--training-tokens 100 is smaller than one minibatch"),
    (["train", "--entropy-coefficient", "inf"], "entropy_coefficient=inf must be a finite number"),
    (["compare", "--batch-tokens", "0"], "--batch-tokens 0: must be >= 2"),
    (["frontier", "--expansion", "0"], "--expansion 0: must be >= 1"),
]
if not torch.cuda.is_available():
    CLI_CASES.append((["train", "--device", "cuda"], "--device cuda: CUDA is not available"))
    CLI_CASES.append((["comsem", "--device", "cuda:1"], "--device cuda:1: CUDA is not available"))
if not torch.backends.mps.is_available():
    CLI_CASES.append((["entropy", "--device", "mps"], "--device mps: MPS is not available"))


@pytest.mark.parametrize(("argv", "match"), CLI_CASES, ids=[" ".join(a[:3]) for a, _ in CLI_CASES])
def test_cli_bad_input_exits_2_with_a_message(
    argv: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pickle(tmp_path, _Exploit(), "evil.pkl")
    code = cli_main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert match in err


def test_distributed_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acts = _acts(tmp_path, activations=torch.ones(6, 4))
    argv = ["--activations", str(acts), "--output", str(tmp_path / "o"), "--batch-size", "8"]
    assert distributed_main(argv) == 2
    assert "batch_size=8" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
    assert distributed_main(["--activations", str(tmp_path / "no.st"), "--output", "o"]) == 2
    assert "no.st" in capsys.readouterr().err
    argv = ["--activations", str(acts), "--output", str(tmp_path / "o"), "--steps", "0"]
    assert distributed_main(argv) == 2
    assert "--steps 0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cfg.json").exists()  # no untrained SAE saved
    assert bae_lens.__version__


# --- pre-flight: every subcommand checks its paths, inputs and endpoint before its first
# expensive step. Each case runs the CLI in-process with the model loader and the corpus
# readers replaced by functions that fail the test, and must exit 2 within seconds.
SECRET = "sk-test-never-printed"
EMBEDDED_HOOKS = "needs the embedded model's cached config.json"
PREFLIGHT_CASES: list[tuple[str, list[str], str]] = [
    ("train output is a file", ["train", "--output", "{tmp}/file.txt"],
     "--output {tmp}/file.txt: is an existing file; give a folder path"),
    ("train output under a file", ["train", "--output", "{tmp}/file.txt/run"],
     "is a file, so nothing can go under it"),
    ("train output holds a run", ["train", "--output", "{tmp}/bae"],
     "--output {tmp}/bae: the folder already holds cfg.json, sae_weights.safetensors; "
     "pass --overwrite"),
    ("train missing dataset", ["train", "--dataset", "{tmp}/none.txt", "--output", "{tmp}/o"],
     "--dataset {tmp}/none.txt: path_or_name='{tmp}/none.txt' looks local but does not exist"),
    ("train binary dataset", ["train", "--dataset", "{tmp}/binary.txt", "--output", "{tmp}/o"],
     "binary.txt' holds NUL bytes (a binary file?)"),
    ("train eval dataset not UTF-8",
     ["train", "--dataset", "{tmp}/data.txt", "--eval-dataset", "{tmp}/latin1.txt",
      "--output", "{tmp}/o"],
     "--eval-dataset {tmp}/latin1.txt: path_or_name='{tmp}/latin1.txt': "),
    ("train hook past the last block",
     ["train", "--hook", "blocks.30.hook_resid_post", "--dataset", "{tmp}/data.txt",
      "--output", "{tmp}/o"],
     "--hook blocks.30.hook_resid_post: the model has blocks 0..29"),
    ("train hook misspelt",
     ["train", "--hook", "blocks.3.hook_resid", "--dataset", "{tmp}/data.txt", "--output",
      "{tmp}/o"],
     "--hook blocks.3.hook_resid: not a hook of the model; TransformerLens names such as"),
    ("eval missing dictionary", ["eval", "{tmp}/none", "--output", "{tmp}/o"],
     "saes {tmp}/none: not a usable saved dictionary: SAE directory"),
    ("eval truncated weights", ["eval", "{tmp}/truncated", "--output", "{tmp}/o"],
     "saes {tmp}/truncated: not a usable saved dictionary: "),
    (
        "eval BAE weights under a standard cfg.json",
        ["eval", "{tmp}/sae", "--output", "{tmp}/o"],
        "saes {tmp}/sae: not a usable saved dictionary: '{tmp}/sae/cfg.json': "
        "architecture='standard', but it holds [",
    ),
    ("eval output is a file", ["eval", "{tmp}/bae", "--output", "{tmp}/file.txt"],
     "--output {tmp}/file.txt: is an existing file"),
    ("eval hook", ["eval", "{tmp}/bae", "--hook", "blocks.99.hook_resid_post", "--dataset",
                   "{tmp}/data.txt", "--output", "{tmp}/o"],
     "--hook blocks.99.hook_resid_post: the model has blocks 0..29"),
    ("eval batch size", ["eval", "{tmp}/bae", "--batch-size", "0"], "--batch-size 0: must be >= 1"),
    ("compare trained work folder",
     ["compare", "--work-dir", "{tmp}/work", "--output", "{tmp}/o"],
     "--work-dir {tmp}/work: already holds trained dictionaries ['bae']; pass --reuse"),
    ("frontier work folder is a file",
     ["frontier", "--work-dir", "{tmp}/file.txt", "--output", "{tmp}/o"],
     "--work-dir {tmp}/file.txt: is an existing file"),
    ("frontier disk space",
     ["frontier", "--training-tokens", "1000000000000", "--cache-dir", "{tmp}/cache",
      "--dataset", "{tmp}/data.txt", "--work-dir", "{tmp}/w", "--output", "{tmp}/o"],
     "--cache-dir {tmp}/cache: the activation cache needs about 1152000.00 GB "
     "(1000000000000 rows x d_in 576 x 2 bytes) but only"),
    ("entropy output is a folder", ["entropy", "--output", "{tmp}"],
     "--output {tmp}: is an existing folder; give a file path"),
    ("entropy sae", ["entropy", "--sae", "{tmp}/none", "--output", "{tmp}/e.json"],
     "--sae {tmp}/none: not a usable saved dictionary"),
    ("entropy layer", ["entropy", "--layers", "3,30", "--output", "{tmp}/e.json"],
     "--layers 3,30: the model has layers 0..29"),
    ("comsem no judge url", ["comsem", "{tmp}/bae", "--output", "{tmp}/o"],
     "--judge-base-url '': not set; give it or set $BAE_LENS_JUDGE_BASE_URL"),
    ("comsem judge not listening",
     ["comsem", "{tmp}/bae", "--output", "{tmp}/o", "--judge-base-url",
      "http://127.0.0.1:{closed}/v1", "--judge-model", "m"],
     "--judge-base-url http://127.0.0.1:{closed}/v1: no answer to GET /models within 5 s"),
    ("comsem judge refuses the key",
     ["comsem", "{tmp}/bae", "--output", "{tmp}/o", "--judge-base-url", "{judge}",
      "--judge-model", "m"],
     "--judge-base-url {judge}: the endpoint refused the key (HTTP 401); the key came from "
     "$BAE_LENS_JUDGE_API_KEY"),
    ("comsem dictionary", ["comsem", "{tmp}/none", "--collect-only", "--output", "{tmp}/o"],
     "saes {tmp}/none: not a usable saved dictionary"),
    # --device / --dtype: the same policy and the same message in every subcommand
    ("train dtype", ["train", "--dtype", "float64", "--output", "{tmp}/o"],
     "--dtype float64: not a supported dtype (float32, bfloat16, float16)"),
    ("eval dtype", ["eval", "{tmp}/bae", "--dtype", "half", "--output", "{tmp}/o"],
     "--dtype half: not a supported dtype (float32, bfloat16, float16)"),
    ("eval device", ["eval", "{tmp}/bae", "--device", "gpu0", "--output", "{tmp}/o"],
     "--device gpu0: not a torch device (auto, cpu, cuda, cuda:N, mps)"),
    ("compare device", ["compare", "--device", "bogus", "--work-dir", "{tmp}/w", "--output",
                        "{tmp}/o"],
     "--device bogus: not a torch device (auto, cpu, cuda, cuda:N, mps)"),
    ("frontier dtype", ["frontier", "--dtype", "int8", "--work-dir", "{tmp}/w", "--output",
                        "{tmp}/o"],
     "--dtype int8: not a supported dtype (float32, bfloat16, float16)"),
    ("entropy device", ["entropy", "--device", "tpu", "--output", "{tmp}/e.json"],
     "--device tpu: not a torch device (auto, cpu, cuda, cuda:N, mps)"),
    ("comsem dtype", ["comsem", "{tmp}/bae", "--collect-only", "--dtype", "fp16", "--output",
                      "{tmp}/o"],
     "--dtype fp16: not a supported dtype (float32, bfloat16, float16)"),
    ("import-legacy output holds a run",
     ["import-legacy", "--model", "{tmp}/file.txt", "--output", "{tmp}/bae"],
     "--output {tmp}/bae: the folder already holds cfg.json"),
    ("import-legacy missing params",
     ["import-legacy", "--model", "{tmp}/file.txt", "--params", "{tmp}/p.pkl", "--output",
      "{tmp}/o"],
     "--params {tmp}/p.pkl: no such file"),
    ("dashboard missing dictionary", ["dashboard", "{tmp}/none", "--output", "{tmp}/o"],
     "sae {tmp}/none: not a usable saved dictionary: SAE directory"),
    ("dashboard feature out of range",
     ["dashboard", "{tmp}/bae", "--features", "3,16", "--output", "{tmp}/o"],
     "--features 3,16: features are 0..15"),
    ("dashboard ComSem file not JSON",
     ["dashboard", "{tmp}/bae", "--comsem", "{tmp}/file.txt", "--output", "{tmp}/o"],
     "file.txt': not a readable JSON file"),
    ("dashboard output holds a run", ["dashboard", "{tmp}/bae", "--output", "{tmp}/bae"],
     "--output {tmp}/bae: the folder already holds cfg.json"),
    ("dashboard n-top", ["dashboard", "{tmp}/bae", "--n-top", "0", "--output", "{tmp}/o"],
     "--n-top 0: must be >= 1"),
    ("dashboard ignored position",
     ["dashboard", "{tmp}/bae", "--ignore-positions", "1,x", "--output", "{tmp}/o"],
     "--ignore-positions 1,x: give positions 0..127, comma-separated"),
    ("upload a folder that is no saved SAE", ["upload", "{tmp}/work", "--repo-id", "me/x"],
     "sae {tmp}/work: not a usable saved dictionary"),
    ("upload repo id", ["upload", "{tmp}/bae", "--repo-id", "bae"],
     "--repo-id bae: give the hub repository as OWNER/NAME"),
    ("upload without a token",
     ["upload", "{tmp}/bae", "--repo-id", "me/x", "--path-in-repo", "layer0"],
     "no hub token: set $HF_TOKEN"),
    ("upload without a hook or a path", ["upload", "{tmp}/bae", "--repo-id", "me/x"],
     "--path-in-repo (not given): '{tmp}/bae''s cfg.json names no hook"),
]  # fmt: skip
NEEDS_EMBEDDED_CONFIG = ("hook", "layer", "disk space")


class _RefusingJudge(BaseHTTPRequestHandler):
    """An endpoint that answers every request with HTTP 401, as for a wrong key."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(401)
        self.end_headers()
        self.wfile.write(b'{"error": "bad key"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def refusing_judge() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forbid_expensive_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from bae_lens import corpus, models

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pre-flight let a model load or a corpus read start")

    monkeypatch.setattr(models, "load_model", refuse)
    for name in ("load_data", "load_embedded_corpus", "load_text_dataset"):
        monkeypatch.setattr(corpus, name, refuse)


@pytest.mark.parametrize(
    ("name", "argv", "match"),
    PREFLIGHT_CASES,
    ids=[c[0].replace(" ", "-") for c in PREFLIGHT_CASES],
)
def test_preflight_fails_fast_with_one_line(
    name: str,
    argv: list[str],
    match: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    refusing_judge: str,
) -> None:
    from bae_lens.models import embedded_config

    if any(word in name for word in NEEDS_EMBEDDED_CONFIG) and embedded_config() is None:
        pytest.skip(EMBEDDED_HOOKS)
    for var in ("BAE_LENS_JUDGE_BASE_URL", "BAE_LENS_JUDGE_MODEL", "OPENAI_BASE_URL",
                "OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BAE_LENS_JUDGE_API_KEY", SECRET)
    _forbid_expensive_steps(monkeypatch)
    _saved(tmp_path, "bae")
    _truncated(tmp_path).rename(tmp_path / "truncated")
    _edit_cfg(tmp_path, architecture="standard")  # {tmp}/sae: a BAE's weights
    _saved(tmp_path / "work", "bae")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "data.txt").write_text("Some text.\n\nMore text.\n")
    (tmp_path / "binary.txt").write_bytes(b"text\0\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait, na\u00efve".encode("latin-1"))
    fill = {"tmp": tmp_path, "closed": _closed_port(), "judge": refusing_judge}
    started = time.perf_counter()
    code = cli_main([a.format(**fill) for a in argv])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match.format(**fill) in lines[0]
    assert SECRET not in err
    assert seconds < 20, f"took {seconds:.1f} s to fail"
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_hook_narrower_or_wider_than_d_model_trains_at_its_own_width(
    tmp_path: Path, tiny_model: HookedSAETransformer
) -> None:
    from bae_lens.models import hook_width

    hook = "blocks.0.mlp.hook_post"
    d_in = hook_width(tiny_model.cfg, hook)
    assert (d_in, tiny_model.cfg.d_model) == (32, 8)
    ds = Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5, 6, 7, 8]] * 8})
    sae = train_sae(
        tiny_model, ds, TrainCfg(d_in=d_in, d_sae=2 * d_in), hook, tmp_path / "out",
        training_tokens=64, train_batch_size_tokens=16, context_size=8,
        is_dataset_tokenized=True, n_batches_for_norm_estimate=1,
    )  # fmt: skip
    assert sae.W_enc.shape == (32, 64) and torch.isfinite(sae.W_enc).all()


def _init_bae() -> bae_lens.BinaryAutoencoderTraining:
    torch.manual_seed(0)
    return bae_lens.BinaryAutoencoderTraining(TrainCfg(d_in=8, d_sae=16, init_firing_rate=0.25))


def test_data_dependent_start_takes_batch_pos_d_in_as_rows() -> None:
    x = torch.randn(3, 5, 8)  # [batch, pos, d_in]
    flat, shaped = _init_bae(), _init_bae()
    flat.initialize_from_batch(x.reshape(15, 8))
    shaped.initialize_from_batch(x)
    assert torch.equal(shaped.b_dec, flat.b_dec) and torch.equal(shaped.b_enc, flat.b_enc)
    assert torch.isfinite(shaped.b_enc).all() and not shaped._needs_data_init


def test_data_dependent_start_skips_a_batch_without_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sae = _init_bae()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with caplog.at_level("WARNING", logger="bae_lens.bae"):
        sae.initialize_from_batch(torch.zeros(0, 8))
        sae.initialize_from_batch(torch.zeros(2, 0, 8))
    assert caplog.text.count("data-dependent start skipped: the batch has no rows") == 2
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())
    assert sae._needs_data_init  # the next batch with rows still starts it


def test_saelens_featurewise_evals_take_two_bits_per_feature() -> None:
    import sae_lens.evals as evals

    bae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=2, d_sae=1, bits_per_feature=2))
    with torch.no_grad():
        bae.W_enc.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # bit 0 reads x0, bit 1 x1
        bae.b_enc.copy_(torch.tensor([3.0, 6.0]))
        bae.W_dec.copy_(torch.tensor([[1.0, 2.0]]))
    metrics = evals.get_featurewise_weight_based_metrics(bae)  # what run_evals calls
    # feature direction = (1/3) bit0 + (2/3) bit1 = [1/3, 2/3]: parallel to W_dec's row
    assert metrics["encoder_norm"] == pytest.approx([5**0.5 / 3])
    assert metrics["encoder_decoder_cosine_sim"] == pytest.approx([1.0])
    assert metrics["encoder_bias"] == pytest.approx([5.0])
    standard = StandardSAE(StandardSAEConfig(d_in=2, d_sae=3))
    assert len(evals.get_featurewise_weight_based_metrics(standard)["encoder_norm"]) == 3


def test_architecture_check_accepts_any_name_sharing_the_trained_inference_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random control registers the BAE's inference config under a second name; a BAE's
    folder must still load as 'bae' whichever name the registry lists first."""
    import bae_lens.io as io_module
    from bae_lens.baselines import register_baselines
    from bae_lens.io import RUNNER_CFG_FILENAME, check_architecture_claim

    register_baselines()
    registry = dict(io_module.SAE_CLASS_REGISTRY)
    first = {"random_bae": registry.pop("random_bae")}  # the control listed before the BAE
    monkeypatch.setattr(io_module, "SAE_CLASS_REGISTRY", first | registry)
    folder = _saved(tmp_path)
    runner = {"sae": TrainCfg(d_in=8, d_sae=16).to_dict()}
    (folder / RUNNER_CFG_FILENAME).write_text(json.dumps(runner))
    cfg = json.loads((folder / "cfg.json").read_text())
    check_architecture_claim(folder, cfg)  # "bae": accepted
    with pytest.raises(ValueError, match="set architecture='bae'"):
        check_architecture_claim(folder, cfg | {"architecture": "standard"})
