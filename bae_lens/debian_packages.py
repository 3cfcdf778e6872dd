"""Read files out of Debian packages and R data archives in pure Python.

A ``.deb`` is an ``ar`` archive holding ``data.tar.*``; R packages keep their data in a
lazy-load database (``Rdata.rdb``, records of a 4-byte big-endian length then zlib, indexed
by ``Rdata.rdx``) that the ``rdata`` package parses. Used to build the embedded corpus
(:mod:`bae_lens.corpus_build`) without dpkg or R.
"""

from __future__ import annotations

import io
import logging
import struct
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


SITE_LIBRARY = Path("usr/lib/R/site-library")


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


def read_ar_members(deb: Path) -> dict[str, bytes]:
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
        members = read_ar_members(deb)
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


def deb_versions(dirs: Iterable[Path]) -> dict[str, str]:
    """Map Debian package name to version, parsed from ``name_version_arch.deb`` file names."""
    versions: dict[str, str] = {}
    for d in dirs:
        for deb in sorted(d.glob("*.deb")) if d.is_dir() else []:
            parts = urllib.parse.unquote(deb.name).split("_")
            if len(parts) == 3:
                versions[parts[0]] = parts[1]
    return versions


def r_description_version(site_library: Path, r_package: str) -> str | None:
    description = site_library / r_package / "DESCRIPTION"
    if description.is_file():
        for line in description.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return "R " + line.split(":", 1)[1].strip()
    return None


def find_site_library(root: Path, r_packages: Iterable[str]) -> Path | None:
    """The R site library under ``root`` (an extracted tree, or a folder that holds the
    ``r_packages`` directly, or either under ``root/extracted``), or None."""
    names = list(r_packages)
    for candidate in (root, root / "extracted"):
        if (candidate / SITE_LIBRARY).is_dir():
            return candidate / SITE_LIBRARY
        if any((candidate / name).is_dir() for name in names):
            return candidate
    return None
