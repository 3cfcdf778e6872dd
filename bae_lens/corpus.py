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

``bash scripts/fetch_corpus.sh`` downloads and extracts the packages and calls
``python -m bae_lens.corpus prepare``, which parses the R files with the
pure-Python ``rdata`` package, joins lines into paragraphs (blank lines separate
paragraphs), drops bare chapter headings, packs paragraphs into documents of
roughly 2,000-4,000 characters and writes ``train.jsonl`` / ``eval.jsonl``
(fields ``text`` and ``source``) plus ``manifest.json``. The last 5% of every
book's documents is held out for evaluation, so every book appears in both
splits and no evaluation text is in the training split.

:func:`load_embedded_corpus` reads a split back through ``datasets`` as a local
JSON dataset; :func:`load_text_dataset` loads a user's local text/JSON files or,
for anything that is not a local path, a Hugging Face hub dataset.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import re
import struct
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "eval")
DEFAULT_MIN_CHARS = 2000
DEFAULT_MAX_CHARS = 4000
DEFAULT_EVAL_FRACTION = 0.05
FETCH_HINT = "run `bash scripts/fetch_corpus.sh` (Debian/Ubuntu with apt-get) to prepare it"
SITE_LIBRARY = Path("usr/lib/R/site-library")
TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class BookSpec:
    """Where one novel lives inside the extracted Debian packages."""

    title: str
    deb_package: str  # Debian package name, e.g. "r-cran-janeaustenr"
    r_package: str  # directory under usr/lib/R/site-library
    kind: str  # "rdb" (lazy-load database object) or "rda-frame" (tidytext books.rda)
    key: str  # object name in the .rdb, or value of the "title" column in books.rda


BOOKS: tuple[BookSpec, ...] = (
    BookSpec("Sense & Sensibility", "r-cran-janeaustenr", "janeaustenr", "rdb", "sensesensibility"),
    BookSpec("Pride & Prejudice", "r-cran-janeaustenr", "janeaustenr", "rdb", "prideprejudice"),
    BookSpec("Mansfield Park", "r-cran-janeaustenr", "janeaustenr", "rdb", "mansfieldpark"),
    BookSpec("Emma", "r-cran-janeaustenr", "janeaustenr", "rdb", "emma"),
    BookSpec("Northanger Abbey", "r-cran-janeaustenr", "janeaustenr", "rdb", "northangerabbey"),
    BookSpec("Persuasion", "r-cran-janeaustenr", "janeaustenr", "rdb", "persuasion"),
    BookSpec("Moby Dick", "r-cran-tokenizers", "tokenizers", "rdb", "mobydick"),
    BookSpec(
        "Great Expectations", "r-cran-tidytext", "tidytext", "rda-frame", "Great Expectations"
    ),
    BookSpec(
        "The War of the Worlds", "r-cran-tidytext", "tidytext", "rda-frame", "The War of the Worlds"
    ),
    BookSpec(
        "Twenty Thousand Leagues under the Sea",
        "r-cran-tidytext",
        "tidytext",
        "rda-frame",
        "Twenty Thousand Leagues under the Sea",
    ),
)

_NUMBER = (
    r"(?:\d+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty[\w-]*|"
    r"thirty[\w-]*|forty[\w-]*|fifty[\w-]*|first|second|third|last)"
)
_HEADING_RE = re.compile(rf"^(?:chapter|book|part|volume|vol\.)\s+{_NUMBER}\b[.:]?(?:\s.*)?$", re.I)
_MAX_HEADING_CHARS = 80
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


# --------------------------------------------------------------------------- text logic


def strip_gutenberg_boilerplate(lines: Sequence[str]) -> list[str]:
    """Drop a Project Gutenberg header/licence if its ``*** START``/``*** END`` markers exist."""
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        upper = line.upper()
        if upper.startswith("*** START OF") and start == 0:
            start = i + 1
        elif upper.startswith("*** END OF"):
            end = i
            break
    return list(lines[start:end])


def is_heading(paragraph: str) -> bool:
    """True for a bare heading such as ``CHAPTER XII``, ``BOOK ONE`` or ``CHAPTER 1. Loomings.``."""
    return len(paragraph) <= _MAX_HEADING_CHARS and bool(_HEADING_RE.match(paragraph))


def lines_to_paragraphs(lines: Iterable[str], drop_headings: bool = True) -> list[str]:
    """Join lines into paragraphs; blank lines separate paragraphs, whitespace is collapsed."""
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in [*lines, ""]:
        line = raw.replace("\ufeff", "").strip()
        if line:
            current.append(line)
            continue
        if current:
            paragraph = re.sub(r"\s+", " ", " ".join(current))
            if not (drop_headings and is_heading(paragraph)):
                paragraphs.append(paragraph)
            current = []
    return paragraphs


def split_long_paragraph(paragraph: str, max_chars: int) -> list[str]:
    """Split a paragraph longer than ``max_chars`` at sentence ends (or spaces as a last resort)."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces: list[str] = []
    for sentence in _SENTENCE_END_RE.split(paragraph):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] = f"{chunks[-1]} {piece}"
        else:
            chunks.append(piece)
    return chunks


def paragraphs_to_documents(
    paragraphs: Iterable[str],
    min_chars: int = DEFAULT_MIN_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> list[str]:
    """Greedily pack consecutive paragraphs (joined by blank lines) into documents.

    A document is closed once it reaches ``min_chars``, or earlier when the next
    paragraph would push it past ``max_chars``. Only the last document of a book
    may be shorter than ``min_chars``; none is longer than ``max_chars``.
    """
    if min_chars < 1 or max_chars < min_chars:
        raise ValueError(
            f"min_chars/max_chars must satisfy 1 <= min_chars <= max_chars, "
            f"got min_chars={min_chars}, max_chars={max_chars}"
        )
    documents: list[str] = []
    current = ""
    for paragraph in paragraphs:
        for piece in split_long_paragraph(paragraph, max_chars):
            if current and len(current) + 2 + len(piece) > max_chars:
                documents.append(current)
                current = ""
            current = f"{current}\n\n{piece}" if current else piece
            if len(current) >= min_chars:
                documents.append(current)
                current = ""
    if current:
        documents.append(current)
    return documents


def split_train_eval(
    documents: Sequence[str], eval_fraction: float = DEFAULT_EVAL_FRACTION
) -> tuple[list[str], list[str]]:
    """Hold out the last ``ceil(eval_fraction * n)`` documents (at least one when n >= 2)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
    n = len(documents)
    n_eval = max(1, math.ceil(n * eval_fraction)) if n >= 2 else 0
    return list(documents[: n - n_eval]), list(documents[n - n_eval :])


# --------------------------------------------------------------------------- R / .deb reading


def read_lazyload_object(data_dir: Path, name: str) -> Any:
    """Read object ``name`` from an R lazy-load database ``Rdata.rdx``/``Rdata.rdb``.

    The ``.rdx`` index is an RDS file mapping names to (offset, length) in the
    ``.rdb``; each ``.rdb`` record is a 4-byte big-endian length plus zlib data.
    """
    import rdata

    index = rdata.read_rds(data_dir / "Rdata.rdx")
    variables = {str(k): v for k, v in index["variables"].items()}
    if name not in variables:
        raise KeyError(f"object {name!r} not in {data_dir}/Rdata.rdx (has {sorted(variables)})")
    offset, length = (int(x) for x in variables[name])
    with open(data_dir / "Rdata.rdb", "rb") as f:
        f.seek(offset)
        record = f.read(length)
    expected = struct.unpack(">I", record[:4])[0]
    payload = zlib.decompress(record[4:])
    if len(payload) != expected:
        raise ValueError(f"corrupt record {name!r} in {data_dir}/Rdata.rdb")
    return rdata.conversion.convert(rdata.parser.parse_data(payload, extension=".rds"))


def _book_lines(site_library: Path, book: BookSpec) -> list[str]:
    """Return the raw lines of one book from an extracted site-library."""
    import warnings

    import pandas as pd
    import rdata

    pkg_dir = site_library / book.r_package
    if book.kind == "rdb":
        obj = read_lazyload_object(pkg_dir / "data", book.key)
        values = [str(x) for x in obj]
        if len(values) == 1:  # one string holding the whole file (tokenizers::mobydick)
            values = values[0].replace("\r\n", "\n").split("\n")
        return strip_gutenberg_boilerplate(values)
    with warnings.catch_warnings():  # "Missing constructor for R class tbl_df"
        warnings.simplefilter("ignore", UserWarning)
        books = rdata.read_rda(pkg_dir / "extdata" / "books.rda")["books"]
    frame = pd.DataFrame(books)  # a tibble, or a plain named list of columns
    rows = frame[frame["title"] == book.key]["text"].fillna("")
    return strip_gutenberg_boilerplate([str(x) for x in rows])


def _read_ar_members(deb: Path) -> dict[str, bytes]:
    """Read the members of a .deb (an ``ar`` archive) without external tools."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not a Debian package (no ar magic)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def extract_debs(deb_dir: Path, dest: Path) -> list[Path]:
    """Extract the R data files of every ``*.deb`` in ``deb_dir`` into ``dest`` (pure Python)."""
    debs = sorted(deb_dir.glob("*.deb"))
    for deb in debs:
        members = _read_ar_members(deb)
        data_name = next((n for n in members if n.startswith("data.tar")), None)
        if data_name is None or data_name.endswith(".zst"):
            raise ValueError(f"{deb}: unsupported data member {data_name!r} (need data.tar.xz/gz)")
        with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
            wanted = [
                m
                for m in tar.getmembers()
                if m.isfile() and "/site-library/" in m.name and ".." not in Path(m.name).parts
            ]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(dest, members=wanted, filter="data")
            else:
                tar.extractall(dest, members=wanted)  # regular files, no '..'
    return debs


def _deb_versions(dirs: Iterable[Path]) -> dict[str, str]:
    """Map Debian package name to version, parsed from ``name_version_arch.deb`` file names."""
    versions: dict[str, str] = {}
    for d in dirs:
        for deb in sorted(d.glob("*.deb")) if d.is_dir() else []:
            parts = urllib.parse.unquote(deb.name).split("_")
            if len(parts) == 3:
                versions[parts[0]] = parts[1]
    return versions


def _r_description_version(site_library: Path, r_package: str) -> str | None:
    description = site_library / r_package / "DESCRIPTION"
    if description.is_file():
        for line in description.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return "R " + line.split(":", 1)[1].strip()
    return None


def _find_site_library(root: Path) -> Path | None:
    for candidate in (root, root / "extracted"):
        if (candidate / SITE_LIBRARY).is_dir():
            return candidate / SITE_LIBRARY
        if any((candidate / b.r_package).is_dir() for b in BOOKS):
            return candidate
    return None


# --------------------------------------------------------------------------- writing


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(records: Iterable[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def build_corpus_from_site_library(
    site_library: Path,
    min_chars: int = DEFAULT_MIN_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> tuple[dict[str, list[dict[str, str]]], dict[str, dict[str, Any]]]:
    """Read every available book; return split records and per-book statistics."""
    splits: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    books: dict[str, dict[str, Any]] = {}
    for book in BOOKS:
        if not (site_library / book.r_package).is_dir():
            logger.warning("skipping %r: %s is not extracted", book.title, book.deb_package)
            continue
        try:
            lines = _book_lines(site_library, book)
        except KeyError as err:  # object absent from this package version
            logger.warning("skipping %r: %s", book.title, err)
            continue
        docs = paragraphs_to_documents(lines_to_paragraphs(lines), min_chars, max_chars)
        if not docs:
            logger.warning("skipping %r: no text found in %s", book.title, book.deb_package)
            continue
        train, evaluation = split_train_eval(docs, eval_fraction)
        stats: dict[str, Any] = {"package": book.deb_package}
        for split, part in zip(SPLITS, (train, evaluation), strict=True):
            splits[split].extend({"text": t, "source": book.title} for t in part)
            stats[f"{split}_documents"] = len(part)
            stats[f"{split}_characters"] = sum(len(t) for t in part)
        books[book.title] = stats
        logger.info("%s: %d train / %d eval documents", book.title, len(train), len(evaluation))
    return splits, books


def prepare_embedded_corpus(
    deb_dir_or_extracted_dir: str | Path,
    out_dir: str | Path,
    *,
    min_chars: int = DEFAULT_MIN_CHARS,
    max_chars: int = DEFAULT_MAX_CHARS,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> Path:
    """Build ``train.jsonl``, ``eval.jsonl`` and ``manifest.json`` in ``out_dir``; return it.

    ``deb_dir_or_extracted_dir`` is a folder holding either an extracted file
    tree (``usr/lib/R/site-library/...``, directly or under ``extracted/``), an
    R site-library itself, or the downloaded ``*.deb`` files (extracted here in
    pure Python, so ``dpkg-deb`` is not required).
    """
    source = Path(deb_dir_or_extracted_dir).expanduser()
    out = Path(out_dir).expanduser()
    if not source.is_dir():
        raise FileNotFoundError(
            f"deb_dir_or_extracted_dir={str(source)!r} is not a directory; {FETCH_HINT}"
        )
    with tempfile.TemporaryDirectory(prefix="bae_lens_debs_") as scratch:
        site_library = _find_site_library(source)
        if site_library is None and extract_debs(source, Path(scratch)):
            site_library = _find_site_library(Path(scratch))
        if site_library is None:
            raise FileNotFoundError(
                f"no R packages ({', '.join(sorted({b.r_package for b in BOOKS}))}) or .deb files "
                f"found in {str(source)!r}; {FETCH_HINT}"
            )
        splits, books = build_corpus_from_site_library(
            site_library, min_chars, max_chars, eval_fraction
        )
        found = _deb_versions([source, source.parent])
        versions = {
            deb: found.get(deb) or _r_description_version(site_library, r_pkg) or "unknown"
            for deb, r_pkg in {(b.deb_package, b.r_package) for b in BOOKS if b.title in books}
        }
    if not splits["train"]:
        raise ValueError(f"no documents were produced from {str(source)!r}; {FETCH_HINT}")
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _atomic_write_text(out / f"{split}.jsonl", _jsonl(splits[split]))
    manifest = {
        "format_version": 1,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "eval_fraction": eval_fraction,
        "debian_packages": dict(sorted(versions.items())),
        "splits": {
            s: {"documents": len(r), "characters": sum(len(x["text"]) for x in r)}
            for s, r in splits.items()
        },
        "books": books,
    }
    _atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote embedded corpus to %s", out)
    return out


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bae_lens.corpus prepare --debs DIR [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bae_lens.corpus", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build train/eval JSONL from the Debian R packages")
    prep.add_argument(
        "--debs", required=True, help="folder with the .deb files and/or extracted/ tree"
    )
    prep.add_argument(
        "--out", default=None, help=f"output folder (default {embedded_corpus_dir()})"
    )
    prep.add_argument("--min-chars", type=int, default=DEFAULT_MIN_CHARS)
    prep.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    prep.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = prepare_embedded_corpus(
        args.debs,
        args.out or embedded_corpus_dir(),
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        eval_fraction=args.eval_fraction,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    for split, stats in manifest["splits"].items():
        print(f"{split}: {stats['documents']} documents, {stats['characters']:,} characters")
    print(f"corpus written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def load_data(dataset: str, split: str) -> datasets.Dataset:
    """The embedded corpus (``dataset='embedded'``), a local text/JSON dataset or a hub one."""
    if dataset == "embedded":
        return load_embedded_corpus(split)
    return load_text_dataset(dataset, split=split)
