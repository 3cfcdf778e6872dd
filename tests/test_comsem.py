"""ComSem: collection on a tiny random model; the judge over real HTTP against a scripted
fake OpenAI-compatible server (faults, resume after SIGKILL); one end-to-end run against
llama.cpp serving the embedded SmolLM2 GGUF (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bae_lens.bae import BinaryAutoencoder, BinaryAutoencoderConfig
from bae_lens.comsem.collect import Collection, Sample, collect, collect_many, stop_layer
from bae_lens.comsem.install import build_target
from bae_lens.comsem.judge import AnswerCache, Judge, JudgeConfig, request_key
from bae_lens.comsem.score import (
    ComSemSettings,
    judge_collection,
    markdown_table,
    parse_description,
    parse_yes_no,
    summarise,
)
from bae_lens.comsem.server import JudgeServerDied, LocalJudgeServer, llama_cpp_available

HOOK = "blocks.0.hook_resid_post"
D, D_SAE = 16, 24
SECRET = "sk-test-SECRET-never-written"


# ---------------------------------------------------------------- parsing (no model)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Description: past-tense verbs of speaking.", ("past-tense verbs of speaking", "ok")),
        ('description: "names of family members"\nmore', ("names of family members", "ok")),
        ("nouns after 'the'", ("nouns after 'the'", "ok")),
        ("Description: words", ("words", "generic")),
        ("Description: common English words.", ("common English words", "generic")),
        ("Description: subword tokens that start words", (None, "tokenizer-level")),
        ("", (None, "missing")),
        (None, (None, "missing")),
    ],
)
def test_parse_description(text: str | None, expected: tuple[str | None, str]) -> None:
    description, status = parse_description(text)
    assert status == expected[1]
    if expected[0] is not None:
        assert description == expected[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", True),
        ("no.", False),
        (" YES, it fits", True),
        ("The answer is no", False),
        ("yes and no", True),  # the first word decides
        ("I cannot say yes or no", None),
        ("maybe", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_yes_no(text: str | None, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


def test_settings_validation() -> None:
    for bad in ({"m": 0}, {"n_negative": -1}, {"threshold": 1.5}, {"n_features": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ComSemSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_url"):
        JudgeConfig(base_url="", model="m")


# ---------------------------------------------------------------- collection (tiny model)
@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D, n_ctx=32, d_head=4, n_heads=4, d_vocab=40, act_fn="gelu",
        normalization_type="LN",
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    toks = torch.randint(1, 40, (6, 12), generator=torch.Generator().manual_seed(1))
    toks[:, 0] = 0  # a BOS-like token, skipped below
    return toks


def _bae() -> BinaryAutoencoder:
    torch.manual_seed(2)
    cfg = BinaryAutoencoderConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))
    sae = BinaryAutoencoder(cfg)
    sae.b_enc.data = torch.randn(D_SAE) * 0.5
    return sae


def _standard() -> StandardSAE:
    torch.manual_seed(3)
    cfg = StandardSAEConfig(d_in=D, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))
    return StandardSAE(cfg)


def _acts(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    return cache[HOOK][:, 1:].reshape(-1, D)  # [n*(T-1), d] without position 0


def test_collect_bae_burst_matches_reference(
    model: HookedTransformer, tokens: torch.Tensor
) -> None:
    sae = _bae()
    k = 3
    coll = collect(model, sae, tokens, HOOK, k=k, max_samples=1000, batch_size=4,
                   skip_token_ids=[0], progress=False)  # fmt: skip
    assert coll.score == "burst"
    bits = sae.encode_bits(_acts(model, tokens))  # [N, d_sae]
    rates = bits.mean(0)
    assert coll.n_tokens == len(bits) == 6 * 11
    torch.testing.assert_close(torch.tensor(coll.firing_rates), rates)
    burst = torch.log2((bits - rates).abs() + 1e-6)
    top = burst.topk(k, dim=1).indices
    expected: dict[int, list[tuple[int, int]]] = {}
    for t, feats in enumerate(top.tolist()):
        for j in feats:
            expected.setdefault(j, []).append((t // 11, t % 11 + 1))
    got = {j: [(s.sequence, s.position) for s in ss] for j, ss in coll.samples.items()}
    assert got == expected  # the same assignment, each list in corpus order
    assert sum(coll.sample_counts) == coll.n_tokens * k
    one = coll.samples[int(top[0, 0])][0]
    assert "<<" in one.context and one.position >= 1
    assert Collection.from_json(json.loads(json.dumps(coll.to_json()))) == coll


@pytest.mark.parametrize("score", ["activation", "zscore"])
def test_collect_sae_scores(model: HookedTransformer, tokens: torch.Tensor, score: str) -> None:
    sae = _standard()
    coll = collect(model, sae, tokens, HOOK, score=score, k=2, max_samples=3,
                   skip_token_ids=[0], progress=False)  # fmt: skip
    acts = sae.encode(_acts(model, tokens))
    sal = (
        acts
        if score == "activation"
        else (acts - acts.mean(0)) / acts.std(0, correction=0).clamp_min(1e-8)
    )
    first = sal[0].topk(2).indices.tolist()
    for j in first:
        assert coll.samples[j][0][:2] == (0, 1)  # token 0 of the corpus is each one's first
    assert all(len(ss) <= 3 for ss in coll.samples.values())  # capped
    assert coll.tokens_per_second > 0


def test_collect_many_shares_forwards_and_matches_collect(
    model: HookedTransformer, tokens: torch.Tensor
) -> None:
    saes = {"bae": _bae(), "standard": _standard()}
    kw: dict[str, Any] = {"k": 2, "skip_token_ids": [0], "progress": False}
    many = collect_many(model, saes, tokens, **kw)
    for name, sae in saes.items():
        one = collect(model, sae, tokens, HOOK, name=name, **kw)
        assert (many[name].samples, many[name].sample_counts) == (one.samples, one.sample_counts)


def test_collect_bad_input(model: HookedTransformer, tokens: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="score='loud'"):
        collect(model, _bae(), tokens, HOOK, score="loud", progress=False)
    with pytest.raises(ValueError, match="not a hook"):
        collect(model, _bae(), tokens, "blocks.9.nope", progress=False)
    assert stop_layer("blocks.14.hook_resid_post") == 15 and stop_layer("hook_embed") is None


# ---------------------------------------------------------------- a scripted fake server
class FakeServer:
    """OpenAI-compatible /v1/chat/completions on loopback; ``script(n, prompt)`` returns
    (status, body or None for a normal answer, delay seconds) for the n-th request."""

    def __init__(self, script: Callable[[int, str], tuple[int, str | None, float]]) -> None:
        self.script = script
        self.requests: list[str] = []
        self.answered: list[str] = []
        self.auth: list[str] = []
        self.hold_from: int | None = None
        """Requests from this index on wait for ``release`` (None: none wait)."""
        self.release = threading.Event()
        self.drop = False
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with fake.lock:
                    n = len(fake.requests)
                    fake.requests.append(prompt)
                    fake.auth.append(self.headers.get("Authorization", ""))
                status, payload, delay = fake.script(n, prompt)
                time.sleep(delay)
                if fake.hold_from is not None and n >= fake.hold_from:
                    fake.release.wait()
                if fake.drop:
                    return  # a request held when the client died: never answered
                if payload is None:
                    payload = json.dumps(
                        {
                            "id": "x", "object": "chat.completion", "created": 0,
                            "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant",
                                                     "content": fake_answer(prompt)}}],
                        }
                    )  # fmt: skip
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if status == 200:
                    with fake.lock:
                        fake.answered.append(prompt)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.drop = True
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def fake_answer(prompt: str) -> str:
    """Descriptions name the token; a test is Yes when its marked token is 'a'."""
    if "What do the marked tokens have in common" in prompt:
        return "Description: the letter a used as a word"
    return "Yes" if "<<a>>" in prompt else "No"


def _config(url: str, **kw: Any) -> JudgeConfig:
    kw = {"concurrency": 4, "timeout": 2.0, "max_retries": 4, "backoff": 0.01} | kw
    return JudgeConfig(base_url=url, model="fake", api_key=SECRET, **kw)


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"prompt {i} <<a>>"}] for i in range(n)]


def test_judge_retries_timeouts_429_500_and_survives_garbage(tmp_path: Path) -> None:
    seen: set[str] = set()

    def script(n: int, prompt: str) -> tuple[int, str | None, float]:
        i = int(prompt.split()[1])
        first = prompt not in seen
        seen.add(prompt)
        if i == 5:
            return 200, '{"choices": [{"message": {"role": "assistant", "content": "banana"}}]}', 0
        if i == 4:
            return 200, "this is not json", 0  # not retryable: recorded as an error
        if first and i in (0, 6):
            return 200, None, 3.0  # past the 2 s timeout
        if first and i in (1, 7):
            return 429, '{"error": {"message": "slow down"}}', 0
        if first and i == 2:
            return 500, '{"error": {"message": "boom"}}', 0
        return 200, None, 0

    cache = tmp_path / "cache.jsonl"
    with FakeServer(script) as server:
        judge = Judge(_config(server.base_url), cache)
        answers = judge.ask(_prompts(8), max_tokens=3)
    assert answers[5].text == "banana" and parse_yes_no(answers[5].text) is None  # malformed
    assert answers[4].text is None and answers[4].error is not None  # garbage body: error
    for i in (0, 1, 2, 3, 6, 7):
        assert answers[i].text == "Yes", answers[i]
    assert len(server.requests) == 8 + 5  # one retry each for prompts 0, 1, 2, 6, 7
    lines = cache.read_text().splitlines()
    assert len(lines) == 7  # every finished request once; the failed one not cached
    assert SECRET not in cache.read_text()
    assert all(a == f"Bearer {SECRET}" for a in server.auth)  # the key does reach the server


def test_judge_concurrency_and_cache_resume(tmp_path: Path) -> None:
    with FakeServer(lambda n, p: (200, None, 0.3)) as server:
        judge = Judge(_config(server.base_url, concurrency=4), tmp_path / "c.jsonl")
        started = time.perf_counter()
        first = judge.ask(_prompts(8) + _prompts(2), max_tokens=3)  # two repeats
        elapsed = time.perf_counter() - started
        again = Judge(_config(server.base_url), tmp_path / "c.jsonl").ask(_prompts(8), 3)
    assert elapsed < 8 * 0.3  # in flight together (8 sequential requests take 2.4 s)
    assert len(server.requests) == 8  # repeats and the rerun were served from the cache
    assert [a.text for a in again] == [a.text for a in first[:8]]
    assert all(a.cached for a in again)


def test_cache_ignores_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    key = request_key("fake", _prompts(1)[0], 3, 0.0)
    path.write_text(json.dumps({"key": key, "text": "Yes"}) + '\n{"key": "tor')
    cache = AnswerCache(path)
    assert len(cache) == 1 and cache.get(key) == {"key": key, "text": "Yes"}


def _toy_collection() -> Collection:
    def sample(j: int, i: int, tok: str) -> Sample:
        return Sample(j, i, tok, f"some text <<{tok}>> more text {j}-{i}")

    samples = {
        0: [sample(0, i, "a") for i in range(12)],  # fits its description
        1: [sample(1, i, "b") for i in range(12)],  # does not
        2: [sample(2, i, "c") for i in range(3)],  # too few samples
    }
    return Collection("toy", "burst", 10, 100, [0.1, 0.2, 0.3], [12, 12, 3], samples)


def test_judge_collection_scores_and_specificity(tmp_path: Path) -> None:
    settings = ComSemSettings(m=5, n_test=4, n_negative=3, n_features=10)
    coll = _toy_collection()
    with FakeServer(lambda n, p: (200, None, 0)) as server:
        results = judge_collection(coll, Judge(_config(server.base_url), None), settings)
    assert [r.feature for r in results] == [0, 1]
    a, b = results
    assert a.description == "the letter a used as a word"
    assert a.score == 1.0 and a.false_positive_rate == 0.0  # negatives are all 'b' tokens
    assert b.score == 0.0 and b.false_positive_rate == 1.0  # negatives are all 'a' tokens
    assert len(a.positives) == 4 and len(a.negatives) == 3
    summary = summarise(coll, results, settings)
    assert summary["n_enough_samples"] == 2 and summary["n_interpretable"] == 1
    assert summary["mean_score"] == 0.5 and summary["mean_false_positive_rate"] == 0.5
    assert "score >= 0.75" in markdown_table({"toy": summary}, "fake")


# ---------------------------------------------------------------- kill and rerun
_WORKER = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("judge", sys.argv[1])
    judge = importlib.util.module_from_spec(spec)
    sys.modules["judge"] = judge
    spec.loader.exec_module(judge)  # without the package: fast start
    cfg = judge.JudgeConfig(base_url=sys.argv[2], model="fake", concurrency=2, backoff=0.01,
                            timeout=30, api_key="sk-test-SECRET-never-written")
    prompts = [[{"role": "user", "content": f"prompt {i} <<a>>"}] for i in range(12)]
    answers = judge.Judge(cfg, sys.argv[3]).ask(prompts, max_tokens=3)
    print(json.dumps([a.text for a in answers]))
    """
)


def test_sigkill_then_rerun_loses_and_repeats_nothing(tmp_path: Path) -> None:
    import bae_lens.comsem.judge as judge_module

    cache = tmp_path / "cache.jsonl"
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    answered_before_kill = 5

    with FakeServer(lambda n, p: (200, None, 0.02)) as server:
        server.hold_from = answered_before_kill  # later requests wait: the client dies first
        args = [sys.executable, str(worker), judge_module.__file__, server.base_url, str(cache)]
        env = os.environ | {"PYTHONPATH": ""}
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n_lines = len(cache.read_text().splitlines()) if cache.exists() else 0
            if n_lines >= answered_before_kill and len(server.requests) > answered_before_kill:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(server.answered) == answered_before_kill
        server.drop = True  # the held requests die unanswered
        server.release.set()
        time.sleep(0.1)
        server.drop, server.hold_from = False, None
        out = subprocess.run(args, capture_output=True, check=True, env=env, timeout=60)
    texts = json.loads(out.stdout)
    assert texts == ["Yes"] * 12
    counts = Counter(server.answered)
    assert len(counts) == 12 and set(counts.values()) == {1}  # each answered exactly once
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12
    assert SECRET not in cache.read_text()


# ---------------------------------------------------------------- a judge server that dies
# Answers GET /v1/models like llama.cpp's server, then dies of SIGSEGV on the first chat
# completion: what the natively built llama.cpp did on an AVX512/AMX machine.
_CRASHING_SERVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            print("ggml: about to crash in libggml-cpu.so", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


class _CrashingServer(LocalJudgeServer):
    def command(self) -> list[str]:
        return [sys.executable, "-c", _CRASHING_SERVER, str(self.port)]


def test_dead_local_judge_stops_comsem_at_once(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with _CrashingServer(gguf, startup_timeout=30) as server:
        config = JudgeConfig(base_url=server.base_url, model="m", concurrency=2, backoff=5.0)
        judge = Judge(config, tmp_path / "cache.jsonl", liveness=server.check_alive)
        started = time.monotonic()
        with pytest.raises(JudgeServerDied, match=r"signal 11 \(SIGSEGV\)") as info:
            judge.ask([[{"role": "user", "content": f"q{i}"}] for i in range(4)], max_tokens=4)
        # no backoff (5 s, doubling) was waited for, let alone five retries
        assert time.monotonic() - started < 5
    assert "about to crash in libggml-cpu.so" in str(info.value)  # the log's tail


def test_local_judge_startup_crash_names_the_exit(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")

    class ExitsAtOnce(LocalJudgeServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "print('bad model file'); raise SystemExit(3)"]

    with pytest.raises(JudgeServerDied, match="exit code 3(.|\n)*bad model file"):
        ExitsAtOnce(gguf, startup_timeout=30).start()


def test_local_judge_build_is_portable() -> None:
    tag, cmake_args = build_target("x86_64")
    assert tag == "x86-64-avx2"
    flags = dict(arg.removeprefix("-D").split("=") for arg in cmake_args.split())
    assert flags["GGML_NATIVE"] == "OFF" and flags["GGML_AVX2"] == "ON"
    for name in ("AVX512", "AVX512_BF16", "AVX512_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert flags["GGML_" + name] == "OFF"
    assert build_target("aarch64")[1].startswith("-DGGML_NATIVE=OFF")


@pytest.mark.slow
def test_installed_judge_has_no_avx512_or_amx_code() -> None:
    """The installed llama.cpp CPU backend must run on AMD and Intel machines alike."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None or shutil.which("objdump") is None:
        pytest.skip("llama_cpp or objdump not installed")
    libraries = list((Path(spec.origin).parent / "lib").glob("libggml-cpu*.so"))
    if not libraries:
        pytest.skip("llama_cpp has no separate CPU backend library")
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(libraries[0])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "%ymm" in listing  # the AVX2 build it should be
    assert "%zmm" not in listing, "AVX512 code: built with native flags (-march=native)?"
    assert "ldtilecfg" not in listing, "AMX code: built with native flags?"


def test_comsem_local_judge_missing_fails_before_collecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bae_lens import cli
    from bae_lens.comsem import server

    monkeypatch.setattr(server, "llama_cpp_available", lambda: False)
    code = cli.main(["comsem", str(tmp_path / "no-such-sae"), "--local-judge",
                     "--output", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert not (tmp_path / "out" / "comsem.json").exists()


# ---------------------------------------------------------------- the real local judge
@pytest.fixture(scope="module")
def llama_server() -> Iterator[LocalJudgeServer]:
    if not llama_cpp_available():
        # CI installs the judge (setup.sh --with-local-judge) and sets this: there a
        # missing judge is a failure, not a skip.
        if os.environ.get("BAE_LENS_REQUIRE_LOCAL_JUDGE") == "1":
            pytest.fail("llama_cpp.server not importable but BAE_LENS_REQUIRE_LOCAL_JUDGE=1")
        pytest.skip("llama_cpp.server not importable: python -m bae_lens.comsem.install")
    try:
        server = LocalJudgeServer(startup_timeout=120)
    except FileNotFoundError as err:
        pytest.skip(f"embedded GGUF missing: {err}")
    with server:
        yield server


@pytest.mark.slow
def test_end_to_end_with_llama_cpp(llama_server: LocalJudgeServer, tmp_path: Path) -> None:
    settings = ComSemSettings(m=5, n_test=2, n_negative=1, n_features=1, describe_tokens=16)
    config = JudgeConfig(base_url=llama_server.base_url, model=llama_server.model, concurrency=1)
    cache = tmp_path / "cache.jsonl"
    coll = _toy_collection()
    results = judge_collection(coll, Judge(config, cache), settings)
    summary = summarise(coll, results, settings)
    assert summary["n_judged"] == 1 and summary["n_failed_requests"] == 0
    assert all(r.status != "error" for r in results)
    n_lines = len(cache.read_text().splitlines())
    assert n_lines >= 2  # two descriptions at least, then the tests of accepted ones
    judge_collection(coll, Judge(config, cache), settings)  # all from the cache
    assert len(cache.read_text().splitlines()) == n_lines


def test_judge_counts_answers_and_comsem_exits_1_when_none_came(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer(lambda n, p: (500, "{}", 0.0)) as down:
        judge = Judge(_config(down.base_url, max_retries=1), tmp_path / "c.jsonl")
        answers = judge.ask(_prompts(3), max_tokens=4)
    assert all(a.error for a in answers) and judge.answered == 0 and judge.sent == 3
    with FakeServer(lambda n, p: (200, None, 0.0)) as up:
        judge = Judge(_config(up.base_url), tmp_path / "c.jsonl")
        judge.ask(_prompts(3), max_tokens=4)
        assert judge.answered == 3
        again = Judge(_config(up.base_url), tmp_path / "c.jsonl")
        again.ask(_prompts(3), max_tokens=4)
        assert again.answered == 3 and again.sent == 0  # answers from the cache count

    from bae_lens.cli import comsem as comsem_cli

    built_from_nothing = {"collection": {}, "results": {"bae": {}}, "requests_sent": 12,
                          "requests_answered": 0, "seconds": {"total": 1.0}}  # fmt: skip
    monkeypatch.setattr(comsem_cli, "run_comsem", lambda args: built_from_nothing)
    monkeypatch.setattr("bae_lens.cli.preflight.check_comsem", lambda args: None)
    args = comsem_cli.argparse.Namespace(output=str(tmp_path))
    assert comsem_cli.run(args) == 1
    assert "none of the 12 judge requests was answered" in capsys.readouterr().err
