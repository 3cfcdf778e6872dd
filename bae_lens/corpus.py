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


def _local_data_files(path: Path, split: str) -> tuple[str, list[str]]:
    """Return (builder, files) for a local file or folder of .txt/.json/.jsonl files."""
    if path.is_file():
        if split != "train":
            raise ValueError(
                f"split={split!r} cannot be selected from the single local file {str(path)!r}; "
                "use split='train', or pass a folder holding '<split>.jsonl'/'<split>.txt'"
            )
        files = [path]
    else:
        named = [path / f"{split}{s}" for s in (*JSON_SUFFIXES, *TEXT_SUFFIXES)]
        files = [p for p in named if p.is_file()][:1]
        if not files:
            files = sorted(p for p in path.rglob("*") if p.suffix in JSON_SUFFIXES and p.is_file())
            files = files or sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise ValueError(f"path_or_name={str(path)!r} holds no .txt/.json/.jsonl files")
    suffixes = {p.suffix for p in files}
    if suffixes <= set(TEXT_SUFFIXES):
        return "text", [str(p) for p in files]
    if suffixes <= set(JSON_SUFFIXES):
        return "json", [str(p) for p in files]
    raise ValueError(
        f"path_or_name={str(path)!r}: file suffixes {sorted(suffixes)} are not allowed; "
        f"use only {list(TEXT_SUFFIXES)} or only {list(JSON_SUFFIXES)}"
    )


def load_text_dataset(path_or_name: str, split: str) -> datasets.Dataset:
    """Load text for training or evaluation.

    A local ``.txt`` / ``.jsonl`` / ``.json`` file, or a folder of them, is loaded
    locally without network access (``.txt`` files: one example per paragraph;
    JSON: must have a ``text`` field). A folder containing ``<split>.jsonl`` (or
    ``.json``/``.txt``) uses that file for ``split``; a single file only serves
    ``split="train"``. Anything that is not an existing local path is treated as
    a Hugging Face hub dataset name: ``datasets.load_dataset(name, split=split)``.
    """
    import datasets

    path = Path(path_or_name).expanduser()
    if not path.exists():
        if path.suffix in (*TEXT_SUFFIXES, *JSON_SUFFIXES) or path_or_name.startswith((".", "/")):
            raise FileNotFoundError(f"path_or_name={path_or_name!r} looks local but does not exist")
        logger.info("loading hub dataset %r split %r", path_or_name, split)
        return datasets.load_dataset(path_or_name, split=split)
    builder, files = _local_data_files(path, split)
    if all(Path(f).stat().st_size == 0 for f in ([files] if isinstance(files, str) else files)):
        raise ValueError(f"path_or_name={path_or_name!r} holds no text (empty)")
    extra = {"sample_by": "paragraph"} if builder == "text" else {}
    dataset = datasets.load_dataset(builder, data_files=files, split="train", **extra)
    if "text" not in dataset.column_names:
        raise ValueError(
            f"path_or_name={path_or_name!r} has columns {dataset.column_names}; a 'text' column is required"
        )
    return dataset


# --------------------------------------------------------------------------- CLI


def load_data(dataset: str, split: str) -> datasets.Dataset:
    """The embedded corpus (``dataset='embedded'``), a local text/JSON dataset or a hub one."""
    if dataset == "embedded":
        return load_embedded_corpus(split)
    return load_text_dataset(dataset, split=split)
