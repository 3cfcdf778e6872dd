"""Build the embedded corpus from the novels in Debian's R data packages.

``bash scripts/fetch_corpus.sh`` downloads and extracts the packages and calls
``python -m bae_lens.corpus_build prepare``, which parses the R files with the pure-Python
``rdata`` package, joins lines into paragraphs (blank lines separate paragraphs), drops
bare chapter headings, packs paragraphs into documents of roughly 2,000-4,000 characters
and writes ``train.jsonl`` / ``eval.jsonl`` (fields ``text`` and ``source``) plus
``manifest.json``. The last 5% of every book's documents is held out for evaluation, so
every book appears in both splits and no evaluation text is in the training split.
:mod:`bae_lens.corpus` reads the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bae_lens.corpus import FETCH_HINT, SPLITS, embedded_corpus_dir
from bae_lens.debian_packages import (
    deb_versions,
    extract_debs,
    find_site_library,
    r_description_version,
    read_lazyload_object,
)

logger = logging.getLogger(__name__)


DEFAULT_MIN_CHARS = 2000


DEFAULT_MAX_CHARS = 4000


DEFAULT_EVAL_FRACTION = 0.05


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


R_PACKAGES = tuple(sorted({book.r_package for book in BOOKS}))

_NUMBER = (
    r"(?:\d+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty[\w-]*|"
    r"thirty[\w-]*|forty[\w-]*|fifty[\w-]*|first|second|third|last)"
)


_HEADING_RE = re.compile(rf"^(?:chapter|book|part|volume|vol\.)\s+{_NUMBER}\b[.:]?(?:\s.*)?$", re.I)


_MAX_HEADING_CHARS = 80


_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


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
        site_library = find_site_library(source, R_PACKAGES)
        if site_library is None and extract_debs(source, Path(scratch)):
            site_library = find_site_library(Path(scratch), R_PACKAGES)
        if site_library is None:
            raise FileNotFoundError(
                f"no R packages ({', '.join(sorted({b.r_package for b in BOOKS}))}) or .deb files "
                f"found in {str(source)!r}; {FETCH_HINT}"
            )
        splits, books = build_corpus_from_site_library(
            site_library, min_chars, max_chars, eval_fraction
        )
        found = deb_versions([source, source.parent])
        versions = {
            deb: found.get(deb) or r_description_version(site_library, r_pkg) or "unknown"
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bae_lens.corpus_build prepare --debs DIR [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bae_lens.corpus_build", description=__doc__.split("\n")[0]
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
