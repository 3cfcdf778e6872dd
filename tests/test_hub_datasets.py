"""Hub datasets without the hub: ``datasets.get_dataset_split_names`` and
``datasets.load_dataset`` answer from a DatasetDict saved under tmp_path (the stand-in),
in the split layouts hub datasets come in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest

from bae_lens import corpus

NAME = "someone/prose"
LAYOUTS = {
    "train+validation+test": ("train", "validation", "test"),
    "train+validation": ("train", "validation"),
    "train+test": ("train", "test"),
    "train": ("train",),
}


class StandInHub:
    """Serves the DatasetDict saved at ``folder`` as hub dataset ``NAME``; records every
    load_dataset call and how many rows each stream handed out."""

    def __init__(self, folder: Path):
        self.data = datasets.load_from_disk(str(folder))
        self.calls: list[dict[str, Any]] = []
        self.rows_read = 0

    def split_names(self, name: str, *args: Any, **kwargs: Any) -> list[str]:
        if name != NAME:
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
        return list(self.data)

    def load_dataset(self, name: str, split: str, streaming: bool = False, **kw: Any) -> Any:
        assert name == NAME
        self.calls.append({"split": split, "streaming": streaming})
        if not streaming:
            return self.data[split]
        return _Counted(self, self.data[split])


class _Counted:
    def __init__(self, hub: StandInHub, data: datasets.Dataset):
        self.hub, self.data = hub, data

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.data.to_iterable_dataset():
            self.hub.rows_read += 1
            yield row


def _docs(split: str, n: int) -> list[str]:
    return [f"{split} document {i} " + "word " * 20 for i in range(n)]


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, splits: tuple[str, ...]) -> StandInHub:
    folder = tmp_path / "standin"
    sizes = {"train": 100, "validation": 10, "test": 12}
    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict({"text": _docs(s, sizes[s])}) for s in splits}
    )
    dd.save_to_disk(str(folder))
    hub = StandInHub(folder)
    monkeypatch.setattr(datasets, "get_dataset_split_names", hub.split_names)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    return hub


def test_auto_eval_split_prefers_validation_then_test_then_train_slice(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _hub(tmp_path, monkeypatch, LAYOUTS[layout])
    expected = next((s for s in ("validation", "test") if s in LAYOUTS[layout]), None)
    with caplog.at_level(logging.INFO, logger="bae_lens.corpus"):
        held = corpus.load_data(NAME, "eval")["text"]
        train = corpus.load_data(NAME, "train")["text"]
    if expected is not None:
        assert held == _docs(expected, len(held)) and len(train) == 100
        assert f"evaluating on split {expected!r}" in caplog.text
    else:  # every 20th train document, never trained on
        assert held == [_docs("train", 100)[i] for i in range(0, 100, 20)]
        assert len(train) == 95 and not set(train) & set(held)
        assert "every 20th train document" in caplog.text


def test_explicit_eval_split_and_missing_split_names_the_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hub(tmp_path, monkeypatch, LAYOUTS["train+validation+test"])
    assert corpus.load_data(NAME, "eval", eval_split="test")["text"] == _docs("test", 12)
    with pytest.raises(ValueError, match=r"--eval-split 'dev'.*\['train', 'validation', 'test'\]"):
        corpus.load_data(NAME, "eval", eval_split="dev")
    with pytest.raises(ValueError, match="would evaluate on the training documents"):
        corpus.load_data(NAME, "eval", eval_split="train")


def test_missing_train_split_names_the_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _hub(tmp_path, monkeypatch, ("train",))
    hub.data = datasets.DatasetDict({"test": hub.data["train"]})
    with pytest.raises(ValueError, match=r"has splits \['test'\]; 'train' is needed"):
        corpus.load_data(NAME, "train")


def test_streaming_reads_only_the_documents_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _hub(tmp_path, monkeypatch, ("train", "validation"))
    train = corpus.load_data(NAME, "train", tokens=50)
    assert hub.calls == [{"split": "train", "streaming": True}]
    needed = corpus.CHARS_PER_TOKEN * 50
    assert sum(map(len, train["text"])) >= needed
    assert sum(map(len, train["text"][:-1])) < needed  # one document more would be waste
    assert hub.rows_read == len(train) < 100


def test_streamed_train_skips_the_held_out_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hub(tmp_path, monkeypatch, ("train",))
    train = corpus.load_data(NAME, "train", tokens=10_000)["text"]
    held = corpus.load_data(NAME, "eval", tokens=10_000)["text"]
    assert len(train) == 95 and len(held) == 5 and not set(train) & set(held)


def test_unknown_hub_name_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hub(tmp_path, monkeypatch, ("train",))
    with pytest.raises(ValueError, match="'nobody/nothing' is not a local path") as err:
        corpus.load_data("nobody/nothing", "train")
    assert "\n" not in str(err.value)


def test_a_text_column_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _hub(tmp_path, monkeypatch, ("train",))
    hub.data = datasets.DatasetDict({"train": hub.data["train"].rename_column("text", "body")})
    for tokens in (None, 100):
        with pytest.raises(ValueError, match=r"columns \['body'\]; a 'text' column"):
            corpus.load_data(NAME, "train", tokens=tokens)


def test_eval_split_is_refused_where_splits_are_not_named_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"embedded corpus has splits \['train', 'eval'\]"):
        corpus.load_data("embedded", "eval", eval_split="validation")
    text = tmp_path / "a.txt"
    text.write_text("one\n\ntwo\n\nthree")
    with pytest.raises(ValueError, match="names its eval split by file"):
        corpus.load_data(str(text), "eval", eval_split="test")
    assert len(corpus.load_data(str(text), "eval")) == 1  # auto: unchanged


def test_cli_options_reach_the_main_job() -> None:
    import argparse

    from bae_lens.cli import train as cli_train

    p = argparse.ArgumentParser()
    cli_train.add_arguments(p)
    plain = cli_train.settings_from_args(p.parse_args([]))
    assert plain.eval_split == "auto" and plain.wandb is None
    args = p.parse_args(["--eval-split", "test", "--wandb", "--wandb-project", "p",
                         "--wandb-entity", "e", "--wandb-run-name", "r"])  # fmt: skip
    s = cli_train.settings_from_args(args)
    assert s.eval_split == "test"
    assert s.wandb is not None and s.wandb.log_to_wandb
    assert (s.wandb.wandb_project, s.wandb.wandb_entity, s.wandb.run_name) == ("p", "e", "r")


@pytest.mark.parametrize(
    ("command", "extra"), [("compare", []), ("eval", ["runs/x"]), ("frontier", [])]
)
def test_every_command_reading_an_eval_split_takes_eval_split(
    command: str, extra: list[str]
) -> None:
    import argparse
    import importlib

    from bae_lens.cli import SUBCOMMANDS

    module = next(m for name, _, m in SUBCOMMANDS if name == command)
    p = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(p)
    assert p.parse_args(extra).eval_split == "auto"
    assert p.parse_args([*extra, "--eval-split", "test"]).eval_split == "test"
