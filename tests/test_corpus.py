"""Tests for bae_lens.corpus on small hand-made inputs (no apt-get, no network)."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from bae_lens import corpus, corpus_build  # noqa: E402

SITE = Path("usr/lib/R/site-library")


def _sentence_paragraph(i: int, n_words: int = 60) -> str:
    return " ".join(f"w{i}x{j}" for j in range(n_words)) + "."


def _book_lines(name: str, n_paragraphs: int) -> list[str]:
    lines = [name.upper(), "", "CHAPTER I", ""]
    for i in range(n_paragraphs):
        words = _sentence_paragraph(i).split()
        lines += [" ".join(words[:30]), " ".join(words[30:]), ""]
        if i == n_paragraphs // 2:
            lines += ["Chapter 2", ""]
    return lines


# --------------------------------------------------------------------------- fake packages


def _write_lazyload_db(data_dir: Path, objects: dict[str, np.ndarray], tmp: Path) -> None:
    """Write an R lazy-load database (Rdata.rdx + Rdata.rdb) like R's makeLazyLoadDB."""
    import rdata

    data_dir.mkdir(parents=True, exist_ok=True)
    variables: dict[str, np.ndarray] = {}
    blob = b""
    for name, value in objects.items():
        raw_path = tmp / f"{name}.rds"
        rdata.write_rds(raw_path, value, compression=None)
        payload = raw_path.read_bytes()
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        variables[name] = np.array([len(blob), len(record)], dtype=np.int32)
        blob += record
    (data_dir / "Rdata.rdb").write_bytes(blob)
    index = {"variables": variables, "references": {}, "compressed": np.array([True])}
    rdata.write_rds(data_dir / "Rdata.rdx", index)


def _make_fake_site_library(root: Path, tmp: Path) -> Path:
    """janeaustenr (two novels), tokenizers (Moby Dick as one Gutenberg string), tidytext."""
    import rdata

    site = root / SITE
    austen = {
        "emma": np.array(_book_lines("Emma", 80)),
        "persuasion": np.array(_book_lines("Persuasion", 40)),
    }
    _write_lazyload_db(site / "janeaustenr" / "data", austen, tmp)
    moby = "\r\n".join(
        ["Header text", "*** START OF THIS PROJECT GUTENBERG EBOOK MOBY DICK ***", ""]
        + _book_lines("Moby", 50)
        + ["*** END OF THIS PROJECT GUTENBERG EBOOK MOBY DICK ***", "LICENSE BOILERPLATE"]
    )
    _write_lazyload_db(site / "tokenizers" / "data", {"mobydick": np.array([moby])}, tmp)
    wells = _book_lines("Worlds", 30)
    pride = _book_lines("Pride duplicate", 5)
    books = {
        "text": np.array(wells + pride),
        "title": np.array(
            ["The War of the Worlds"] * len(wells) + ["Pride and Prejudice"] * len(pride)
        ),
    }
    (site / "tidytext" / "extdata").mkdir(parents=True)
    rdata.write_rda(site / "tidytext" / "extdata" / "books.rda", {"books": books})
    return site


@pytest.fixture(scope="module")
def fake_extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extracted")
    _make_fake_site_library(root, tmp_path_factory.mktemp("scratch"))
    return root


@pytest.fixture(scope="module")
def prepared(fake_extracted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus_build.prepare_embedded_corpus(fake_extracted, tmp_path_factory.mktemp("out"))


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- text logic


def test_lines_to_paragraphs_joins_lines_and_drops_headings() -> None:
    lines = ["\ufeffCHAPTER 1. Loomings.", "", "Call me  Ishmael.", "Some years ago.", "", ""]
    lines += ["Chapter XII", "", "BOOK ONE", "", "Part of the crew stayed."]
    assert corpus_build.lines_to_paragraphs(lines) == [
        "Call me Ishmael. Some years ago.",
        "Part of the crew stayed.",
    ]
    kept = corpus_build.lines_to_paragraphs(lines, drop_headings=False)
    assert kept[0] == "CHAPTER 1. Loomings."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CHAPTER I", True),
        ("Chapter 12", True),
        ("VOLUME III", True),
        ("PART TWO", True),
        ("CHAPTER 135. The Chase.--Third Day.", True),
        ("Chapter and verse were quoted to him at length.", False),
        ("Part of the crew stayed behind.", False),
        ("CHAPTER I " + "x" * 100, False),
    ],
)
def test_is_heading(text: str, expected: bool) -> None:
    assert corpus_build.is_heading(text) is expected


def test_strip_gutenberg_boilerplate() -> None:
    lines = ["junk", "*** START OF THIS PROJECT GUTENBERG EBOOK X ***", "a", "b"]
    lines += ["*** END OF THIS PROJECT GUTENBERG EBOOK X ***", "licence"]
    assert corpus_build.strip_gutenberg_boilerplate(lines) == ["a", "b"]
    assert corpus_build.strip_gutenberg_boilerplate(["a", "b"]) == ["a", "b"]


def test_split_long_paragraph_respects_limit() -> None:
    paragraph = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = corpus_build.split_long_paragraph(paragraph, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert " ".join(chunks) == paragraph
    unbroken = "a" * 1000
    assert all(len(c) <= 300 for c in corpus_build.split_long_paragraph(unbroken, 300))
    assert corpus_build.split_long_paragraph("short.", 300) == ["short."]


def test_paragraphs_to_documents_sizes_and_order() -> None:
    paragraphs = [_sentence_paragraph(i) for i in range(100)]
    docs = corpus_build.paragraphs_to_documents(paragraphs, min_chars=2000, max_chars=4000)
    assert all(2000 <= len(d) <= 4000 for d in docs[:-1])
    assert [p for d in docs for p in d.split("\n\n")] == paragraphs
    long_docs = corpus_build.paragraphs_to_documents(["short.", "z" * 9000], 2000, 4000)
    assert long_docs[0] == "short." and all(len(d) <= 4000 for d in long_docs)
    assert "".join(long_docs[1:]) == "z" * 9000


@pytest.mark.parametrize(("min_chars", "max_chars"), [(0, 10), (100, 50)])
def test_paragraphs_to_documents_rejects_bad_limits(min_chars: int, max_chars: int) -> None:
    with pytest.raises(ValueError, match="min_chars"):
        corpus_build.paragraphs_to_documents(["x"], min_chars=min_chars, max_chars=max_chars)


def test_split_train_eval_holds_out_tail() -> None:
    docs = [f"d{i}" for i in range(40)]
    train, evaluation = corpus_build.split_train_eval(docs, 0.05)
    assert evaluation == ["d38", "d39"] and train == docs[:38]
    assert corpus_build.split_train_eval(["a", "b"], 0.05) == (["a"], ["b"])
    assert corpus_build.split_train_eval(["a"], 0.05) == (["a"], [])
    with pytest.raises(ValueError, match="eval_fraction"):
        corpus_build.split_train_eval(docs, 1.5)


# --------------------------------------------------------------------------- prepare


def test_prepare_from_fake_packages(prepared: Path) -> None:
    train = _read_jsonl(prepared / "train.jsonl")
    evaluation = _read_jsonl(prepared / "eval.jsonl")
    manifest = json.loads((prepared / "manifest.json").read_text())
    sources = {"Emma", "Persuasion", "Moby Dick", "The War of the Worlds"}
    assert {r["source"] for r in train} == sources
    assert {r["source"] for r in evaluation} == sources
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in evaluation)
    all_text = "".join(r["text"] for r in train + evaluation)
    assert "GUTENBERG" not in all_text and "LICENSE" not in all_text
    assert "CHAPTER I" not in all_text and "Chapter 2" not in all_text
    assert "WORLDS" in all_text and "PRIDE DUPLICATE" not in all_text
    assert manifest["splits"]["train"]["documents"] == len(train)
    assert manifest["splits"]["eval"]["characters"] == sum(len(r["text"]) for r in evaluation)
    assert set(manifest["books"]) == sources
    assert not list(prepared.glob("*.tmp"))


def test_prepare_is_deterministic(fake_extracted: Path, prepared: Path, tmp_path: Path) -> None:
    again = corpus_build.prepare_embedded_corpus(fake_extracted, tmp_path)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (again / name).read_bytes() == (prepared / name).read_bytes()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_prepare_from_deb_files_without_dpkg(fake_extracted: Path, tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:xz") as tar:
        tar.add(fake_extracted / "usr", arcname="./usr")
    deb = b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
    deb += _ar_member("data.tar.xz", tar_bytes.getvalue())
    (debs / "r-cran-janeaustenr_1.0.0-1_all.deb").write_bytes(deb)
    out = corpus_build.prepare_embedded_corpus(debs, tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["debian_packages"]["r-cran-janeaustenr"] == "1.0.0-1"
    assert manifest["splits"]["train"]["documents"] > 0


def test_prepare_missing_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fetch_corpus.sh"):
        corpus_build.prepare_embedded_corpus(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="fetch_corpus.sh"):
        corpus_build.prepare_embedded_corpus(tmp_path, tmp_path / "out")


def test_cli_prepare(fake_extracted: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        corpus_build.main(["prepare", "--debs", str(fake_extracted), "--out", str(tmp_path)]) == 0
    )
    assert "train:" in capsys.readouterr().out
    assert (tmp_path / "eval.jsonl").is_file()


# --------------------------------------------------------------------------- loading


def test_embedded_corpus_dir_respects_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAE_LENS_CACHE", str(tmp_path))
    assert corpus.embedded_corpus_dir() == tmp_path / "corpus"
    monkeypatch.delenv("BAE_LENS_CACHE")
    assert corpus.embedded_corpus_dir() == Path.home() / ".cache" / "bae_lens" / "corpus"


def test_load_embedded_corpus_from_env(
    prepared: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "corpus").mkdir(parents=True)
    for name in ("train.jsonl", "eval.jsonl"):
        (cache / "corpus" / name).write_bytes((prepared / name).read_bytes())
    monkeypatch.setenv("BAE_LENS_CACHE", str(cache))
    train = corpus.load_embedded_corpus("train")
    evaluation = corpus.load_embedded_corpus("eval")
    assert set(train.column_names) == {"text", "source"}
    assert len(train) == len(_read_jsonl(prepared / "train.jsonl"))
    assert len(evaluation) > 0


def test_load_embedded_corpus_unknown_split(prepared: Path) -> None:
    with pytest.raises(ValueError, match=r"split.*'validation'.*train.*eval|'validation'"):
        corpus.load_embedded_corpus("validation", corpus_dir=prepared)


def test_load_embedded_corpus_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fetch_corpus.sh"):
        corpus.load_embedded_corpus("train", corpus_dir=tmp_path)


def test_load_embedded_corpus_empty(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        corpus.load_embedded_corpus("train", corpus_dir=tmp_path)


def test_load_text_dataset_local_files(tmp_path: Path) -> None:
    txt = tmp_path / "prose.txt"
    txt.write_text("First paragraph line one\nline two.\n\nSecond paragraph.\n")
    train = corpus.load_text_dataset(str(txt), "train")
    held = corpus.load_text_dataset(str(txt), "eval")  # a single file has no eval split:
    assert train.column_names == ["text"] and len(train) == len(held) == 1  # one is held out
    both = {t.strip() for t in train["text"]} | {t.strip() for t in held["text"]}
    assert both == {"First paragraph line one\nline two.", "Second paragraph."}
    assert len(corpus.load_text_dataset(str(txt), "all")) == 2  # an explicit eval file

    docs = [{"text": f"document {i}"} for i in range(40)]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in docs))
    train, held = (corpus.load_text_dataset(str(jsonl), s)["text"] for s in ("train", "eval"))
    assert len(train) == 38 and len(held) == 2 and not set(train) & set(held)
    assert corpus.load_text_dataset(str(jsonl), "eval")["text"] == held  # the same every time

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(4):
        (texts / f"book{i}.txt").write_text("\n\n".join(f"para {i}.{j}" for j in range(10)))
    train, held = (corpus.load_text_dataset(str(texts), s)["text"] for s in ("train", "eval"))
    assert len(train) == 38 and len(held) == 2 and not set(train) & set(held)

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": "a train doc"}) + "\n")
    (folder / "eval.jsonl").write_text(json.dumps({"text": "an eval doc"}) + "\n")
    assert corpus.load_text_dataset(str(folder), "eval")["text"] == ["an eval doc"]
    assert corpus.load_text_dataset(str(folder), "train")["text"] == ["a train doc"]


def test_load_text_dataset_bad_inputs(tmp_path: Path) -> None:
    txt = tmp_path / "prose.txt"
    txt.write_text("Some text.\n")
    with pytest.raises(ValueError, match="1 document\\(s\\): at least 2 are needed"):
        corpus.load_text_dataset(str(txt), "eval")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus.load_text_dataset(str(tmp_path / "missing.jsonl"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt/.json/.jsonl"):
        corpus.load_text_dataset(str(tmp_path / "empty"), "train")
    bad = tmp_path / "nocol.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="'text' column"):
        corpus.load_text_dataset(str(bad), "train")


# --------------------------------------------------------------------------- real corpus


def test_real_embedded_corpus_if_prepared() -> None:
    directory = corpus.embedded_corpus_dir()
    if not (directory / "train.jsonl").is_file() or not (directory / "eval.jsonl").is_file():
        pytest.skip(
            f"embedded corpus not prepared in {directory}; run bash scripts/fetch_corpus.sh"
        )
    train = corpus.load_embedded_corpus("train")
    evaluation = corpus.load_embedded_corpus("eval")
    assert len(train) > 1000 and len(evaluation) > 50
    assert set(evaluation["source"]) == set(train["source"])
    train_texts = set(train["text"])
    assert train_texts.isdisjoint(evaluation["text"])
    joined_train = "\n".join(train["text"])
    for text in evaluation["text"][::10]:
        assert text[:500] not in joined_train
    n_train = sum(len(t) for t in train["text"])
    n_eval = sum(len(t) for t in evaluation["text"])
    assert 3_000_000 < n_train < 20_000_000, n_train
    assert 0.02 < n_eval / (n_train + n_eval) < 0.10
