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
from collections.abc import Sequence
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


SNIFF_BYTES = 65_536


def check_text_files(path_or_name: str, files: list[Path]) -> None:
    """Each file's first 64 KiB is UTF-8 text with no NUL byte: a binary or mis-encoded
    file is named here instead of failing deep inside ``datasets``."""
    for file in files:
        with open(file, "rb") as f:
            head = f.read(SNIFF_BYTES)
        problem = "holds NUL bytes (a binary file?)" if b"\0" in head else None
        if problem is None:
            try:
                head.decode("utf-8")
            except UnicodeDecodeError as err:
                if err.start < len(head) - 4:  # not a character cut by the 64 KiB window
                    problem = f"is not UTF-8 text (byte {err.start})"
        if problem is not None:
            raise ValueError(
                f"path_or_name={path_or_name!r}: {str(file)!r} {problem}; expected UTF-8 "
                f"{'/'.join((*TEXT_SUFFIXES, *JSON_SUFFIXES))} text"
            )


def local_data_files(path_or_name: str, split: str) -> list[Path] | None:
    """The local files :func:`load_text_dataset` would read for ``split``, checked (they
    exist, their suffixes agree, they are UTF-8 text), or None for a hub dataset name."""
    path = Path(path_or_name).expanduser()
    if not path.exists():
        if path.suffix in (*TEXT_SUFFIXES, *JSON_SUFFIXES) or path_or_name.startswith((".", "/")):
            raise FileNotFoundError(f"path_or_name={path_or_name!r} looks local but does not exist")
        return None
    files, _ = _local_data_files(path, split)
    _builder(path, files)
    check_text_files(path_or_name, files)
    return files


def load_text_dataset(
    path_or_name: str, split: str, *, eval_split: str = "auto", tokens: int | None = None
) -> datasets.Dataset:
    """Load text for training (``split="train"``) or evaluation (any other split name).

    A local ``.txt`` / ``.jsonl`` / ``.json`` file, or a folder of them, is loaded without
    network access (``.txt``: one document per paragraph; JSON: a ``text`` field). A folder
    with ``train.*`` and ``eval.*`` (or ``validation.*`` / ``test.*``) files uses them as
    they are. Otherwise the documents are split: 5% of them, chosen with a fixed seed, are
    held out for evaluation and never trained on (logged). ``split="all"`` takes every
    document of the path (an explicit evaluation file). Anything that is not an existing
    local path is a Hugging Face hub dataset name (:func:`load_hub_dataset`: ``eval_split``
    and ``tokens`` apply to it; a local path names its eval split by file).
    """
    import datasets

    path = Path(path_or_name).expanduser()
    if local_data_files(path_or_name, split) is None:
        return load_hub_dataset(path_or_name, split, eval_split=eval_split, tokens=tokens)
    if eval_split != "auto":
        raise ValueError(
            f"--eval-split {eval_split!r} is for hub datasets; the local path {path_or_name!r} "
            "names its eval split by file (train.* beside eval.*, validation.* or test.*), or "
            "give --eval-dataset"
        )
    files, sliced = _local_data_files(path, split)
    builder = _builder(path, files)
    if all(f.stat().st_size == 0 for f in files):
        raise ValueError(f"path_or_name={path_or_name!r} holds no text (empty)")
    extra = {"sample_by": "paragraph"} if builder == "text" else {}
    try:
        dataset = datasets.load_dataset(
            builder, data_files=[str(f) for f in files], split="train", **extra
        )
    except Exception as err:  # datasets wraps pyarrow's JSON errors in its own
        cause = err.__cause__ or err
        raise ValueError(
            f"path_or_name={path_or_name!r} could not be read as {builder} "
            f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
        ) from None
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


# --------------------------------------------------------------------------- hub

HUB_EVAL_SPLITS = ("validation", "test")
"""``eval_split="auto"`` on a hub dataset: the first of these it has; with neither, every
``HUB_HELD_OUT_EVERY``-th document of train is held out."""
HUB_HELD_OUT_EVERY = 20
CHARS_PER_TOKEN = 8
"""Characters streamed per token asked for: about twice what English BPE needs (~4), so a
streamed split rarely runs short (SAELens then starts the documents again, with a warning)."""


def choose_eval_split(
    splits: Sequence[str], eval_split: str = "auto", *, dataset: str = ""
) -> str | None:
    """The split to evaluate on, or None for a held-out slice of train.

    >>> choose_eval_split(["train", "test", "validation"])
    'validation'
    >>> choose_eval_split(["train"]) is None
    True
    """
    if eval_split == "auto":
        return next((s for s in HUB_EVAL_SPLITS if s in splits), None)
    if eval_split == "train":
        raise ValueError(
            f"--eval-split 'train' would evaluate on the training documents; use 'auto' "
            f"for a held-out slice of train, or one of {[s for s in splits if s != 'train']}"
        )
    if eval_split not in splits:
        raise ValueError(
            f"--eval-split {eval_split!r}: dataset {dataset!r} has splits {list(splits)}; "
            "give one of them or 'auto'"
        )
    return eval_split


def hub_split_names(name: str) -> list[str]:
    """The split names of hub dataset ``name``, or a one-line ValueError saying why not."""
    import datasets

    try:
        return list(datasets.get_dataset_split_names(name))
    except Exception as err:  # offline, unknown name, gated, ...: many exception types
        first_line = (str(err).splitlines() or [""])[0]
        raise ValueError(
            f"dataset={name!r} is not a local path and its hub splits could not be read "
            f"({type(err).__name__}: {first_line})"
        ) from None


def load_hub_dataset(
    name: str, split: str, *, eval_split: str = "auto", tokens: int | None = None
) -> datasets.Dataset:
    """``split`` "train" or "eval" of hub dataset ``name``, with a ``text`` column.

    The eval split is ``eval_split`` or, for "auto", validation, else test, else every
    20th document of train (index 0, 20, 40, ...), which training then skips; the choice
    is logged. With ``tokens`` the split is streamed (``streaming=True``) and only the
    first documents holding ``CHARS_PER_TOKEN * tokens`` characters are read; without,
    it is downloaded whole.
    """
    import datasets

    splits = hub_split_names(name)
    chosen = choose_eval_split(splits, eval_split, dataset=name)
    source = "train" if split == "train" or chosen is None else chosen
    if source not in splits:
        raise ValueError(f"dataset {name!r} has splits {splits}; {source!r} is needed")
    held_out = chosen is None and split != "train"
    if split != "train":
        where = f"split {chosen!r}" if chosen else f"every {HUB_HELD_OUT_EVERY}th train document"
        logger.info("dataset %r: evaluating on %s (splits %s)", name, where, splits)

    def keep(i: int) -> bool:
        return chosen is not None or (i % HUB_HELD_OUT_EVERY == 0) == held_out

    if tokens is None:
        data = datasets.load_dataset(name, split=source)
        if chosen is None:
            data = data.select([i for i in range(len(data)) if keep(i)])
        _require_text(name, data.column_names)
        return data
    texts: list[str] = []
    n_chars = 0
    for i, row in enumerate(datasets.load_dataset(name, split=source, streaming=True)):
        if not keep(i):
            continue
        _require_text(name, list(row))
        texts.append(row["text"])
        n_chars += len(row["text"])
        if n_chars >= CHARS_PER_TOKEN * tokens:
            break
    if not texts:
        raise ValueError(f"dataset {name!r} split {source!r} holds no documents")
    logger.info("streamed %d documents (%d characters) of %r split %r for %d tokens",
                len(texts), n_chars, name, source, tokens)  # fmt: skip
    return datasets.Dataset.from_dict({"text": texts})


def _require_text(name: str, columns: list[str]) -> None:
    if "text" not in columns:
        raise ValueError(f"dataset {name!r} has columns {columns}; a 'text' column is required")


# --------------------------------------------------------------------------- CLI


def load_data(
    dataset: str, split: str, *, eval_split: str = "auto", tokens: int | None = None
) -> datasets.Dataset:
    """The embedded corpus (``dataset='embedded'``), a local text/JSON dataset or a hub one.

    ``split``: "train", "eval" (the eval split chosen by ``eval_split``, see
    :func:`load_hub_dataset`) or "all" (a local evaluation file taken whole). ``tokens``:
    how many tokens the caller will read, so a hub split is streamed only that far.
    """
    if dataset == "embedded":
        if eval_split not in ("auto", "eval"):
            raise ValueError(
                f"--eval-split {eval_split!r}: the embedded corpus has splits {list(SPLITS)}"
            )
        return load_embedded_corpus(split)
    return load_text_dataset(dataset, split=split, eval_split=eval_split, tokens=tokens)
