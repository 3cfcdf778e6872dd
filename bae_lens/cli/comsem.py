"""``bae-lens comsem``: collect, interpret and score features of saved dictionaries.

Point it at any OpenAI-compatible endpoint (key from ``$BAE_LENS_JUDGE_API_KEY`` or
``$OPENAI_API_KEY``, never from a flag, never written anywhere)::

    export BAE_LENS_JUDGE_BASE_URL=https://api.openai.com/v1 BAE_LENS_JUDGE_MODEL=gpt-4o-mini
    export OPENAI_API_KEY=...
    bae-lens comsem runs/compare/bae runs/compare/standard --output runs/comsem

or at the offline judge (llama.cpp serving the embedded SmolLM2 GGUF on loopback), or at a
stronger named one once installed (:mod:`bae_lens.comsem.judges`)::

    bae-lens comsem runs/compare/bae runs/compare/standard --local-judge
    python -m bae_lens.comsem.judges install qwen2.5-coder-0.5b
    bae-lens comsem runs/compare/bae runs/compare/standard --local-judge --judge qwen2.5-coder-0.5b

Before trusting a judge, calibrate it on ground-truth features of the corpus (token classes
against random token sets; :mod:`bae_lens.comsem.calibrate`)::

    bae-lens comsem --calibrate --local-judge --output runs/comsem/calibration

The verdict is kept per judge model (``--calibration-file``) and printed with every ComSem
table of that judge. Every table also carries an LLM-free score
(:mod:`bae_lens.comsem.detect`); ``--collect-only`` reports it alone, with no endpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_SEQUENCES = 256
ALL_SEQUENCES = 1_000_000
"""--sequences for --calibrate: the whole eval split (tokenizing it takes seconds)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "saes",
        nargs="*",
        help="SAELens save folders (label = folder name, or LABEL=FOLDER); none with --calibrate",
    )
    p.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    p.add_argument("--hook", default=None, help="hook (default: each SAE's recorded hook)")
    p.add_argument("--dataset", default="embedded", help="corpus; its eval split is read")
    p.add_argument(
        "--sequences",
        type=int,
        default=None,
        help="corpus sequences to collect on (default 256; with --calibrate, the whole split)",
    )
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward")
    p.add_argument("--top-k", type=int, default=10, help="features each token is assigned to")
    p.add_argument("--score", default="auto", help="auto|burst|activation|zscore")
    p.add_argument("--max-samples", type=int, default=40, help="samples kept per feature")
    p.add_argument("--m", type=int, default=5, help="samples shown for interpretation")
    p.add_argument("--n-test", type=int, default=8, help="held-out samples tested")
    p.add_argument("--n-negative", type=int, default=8, help="other features' samples mixed in")
    p.add_argument("--n-features", type=int, default=30, help="features judged per dictionary")
    p.add_argument("--threshold", type=float, default=0.75, help="'interpretable' score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-base-url", default=None, help="default $BAE_LENS_JUDGE_BASE_URL")
    p.add_argument("--judge-model", default=None, help="default $BAE_LENS_JUDGE_MODEL")
    p.add_argument(
        "--local-judge",
        action="store_true",
        help="serve --judge NAME or --judge-gguf FILE (default: the embedded SmolLM2) with "
        "llama.cpp on loopback",
    )
    from bae_lens.comsem.judges import JUDGES

    p.add_argument(
        "--judge",
        default=None,
        help=f"named judge for --local-judge: {', '.join(JUDGES)} (install with python -m "
        "bae_lens.comsem.judges install NAME); not with --judge-gguf",
    )
    p.add_argument("--judge-gguf", default=None, help="GGUF file for --local-judge")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--cache", default=None, help="answer cache (default OUTPUT/judge_cache.jsonl)")
    p.add_argument("--output", default="runs/comsem", help="comsem.json, comsem.md, collections")
    p.add_argument("--collect-only", action="store_true", help="stop after collection")
    p.add_argument(
        "--reuse-collection", action="store_true", help="load OUTPUT/collection_*.json if present"
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate the judge on ground-truth token-class features vs random ones "
        "(no dictionaries); writes calibration.json/.md and records the verdict",
    )
    p.add_argument(
        "--calibration-classes",
        default=None,
        help="comma-separated token classes for --calibrate (default all: digits, "
        "capitalised, sentence_final, pronouns, prepositions, ly_words, ing_words, names)",
    )
    p.add_argument(
        "--calibration-random",
        type=int,
        default=None,
        help="random features for --calibrate (default: one per true feature)",
    )
    p.add_argument(
        "--calibration-file",
        default=None,
        help="judge verdicts, keyed by judge model (default "
        "benchmarks/results/comsem/calibration/judges.json in the repository)",
    )
    from bae_lens.cli.preflight import add_runtime_arguments

    add_runtime_arguments(p)


def _labelled(paths: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in paths:
        label, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
        label = label or Path(folder).name
        if not (Path(folder) / "cfg.json").exists():
            raise ValueError(f"{folder!r} is not a SAELens save folder (no cfg.json)")
        if label in out:
            raise ValueError(f"dictionary label {label!r} is repeated in {paths}")
        out[label] = Path(folder)
    return out


def _collections(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from bae_lens import models
    from bae_lens.comsem.collect import Collection, collect_many
    from bae_lens.evaluate import load_eval_tokens
    from bae_lens.io import load_sae

    folders = _labelled(args.saes)
    result: dict[str, Collection] = {}
    for label in folders:
        path = out / f"collection_{label}.json"
        if args.reuse_collection and path.exists():
            result[label] = Collection.from_json(json.loads(path.read_text()))
    from bae_lens.runtime import resolve_dtype

    todo = {
        n: load_sae(f, device=args.device, dtype=args.dtype)
        for n, f in folders.items()
        if n not in result
    }
    if todo:
        name = args.model or models.EMBEDDED_MODEL_NAME
        model = models.load_model(name, device=args.device, dtype=resolve_dtype(args.dtype))
        n_sequences = args.sequences or DEFAULT_SEQUENCES
        tokens = load_eval_tokens(model, args.dataset, args.context_size, n_sequences)
        collected = collect_many(
            model, todo, tokens, args.hook, score=args.score, k=args.top_k,
            max_samples=args.max_samples, batch_size=args.batch_size,
        )  # fmt: skip
        for label, coll in collected.items():
            (out / f"collection_{label}.json").write_text(json.dumps(coll.to_json()))
        result |= collected
    return {label: result[label] for label in folders}


def _open_judge(args: argparse.Namespace, out: Path, stack: ExitStack) -> tuple[Any, str]:
    """The judge the options name (starting the local server on ``stack``), and its label."""
    from bae_lens.comsem.judge import Judge, JudgeConfig
    from bae_lens.comsem.server import LocalJudgeServer

    base_url, model = args.judge_base_url, args.judge_model
    liveness = None
    if args.local_judge:
        server = stack.enter_context(LocalJudgeServer(_local_gguf(args)))
        base_url, model = server.base_url, model or server.model
        liveness = server.check_alive
    config = JudgeConfig.from_env(
        base_url, model, concurrency=args.concurrency, timeout=args.timeout,
        max_retries=args.max_retries,
    )  # fmt: skip
    judge = Judge(config, args.cache or out / "judge_cache.jsonl", liveness=liveness)
    label = f"{config.model} at {config.base_url}"
    if args.local_judge:
        label += " (offline llama.cpp judge: proves the pipeline, weak judgements)"
    return judge, label


def _local_gguf(args: argparse.Namespace) -> str | Path | None:
    """The GGUF for --local-judge: --judge-gguf, the installed --judge NAME, or None (the
    server's default, the embedded SmolLM2). The pre-flight has checked NAME is installed."""
    from bae_lens.comsem.judges import gguf_path

    name = getattr(args, "judge", None)
    return args.judge_gguf if name is None else gguf_path(name)


def _judge_record(args: argparse.Namespace, judge: Any, label: str) -> dict[str, Any]:
    """What comsem.json and calibration.json say of the judge (never the key)."""
    return judge.config.public() | {
        "label": label,
        "local": args.local_judge,
        "named": getattr(args, "judge", None),
    }


def _calibration_file(args: argparse.Namespace) -> Path:
    from bae_lens.comsem.calibrate import REGISTRY

    return Path(args.calibration_file) if args.calibration_file else REGISTRY


def _calibration_tokens(args: argparse.Namespace) -> tuple[Any, Any]:
    """(tokenizer, tokens) for --calibrate: no model is loaded, only its tokenizer."""
    from bae_lens.corpus import load_data
    from bae_lens.evaluate import build_eval_tokens
    from bae_lens.model_cache import is_embedded_name, load_embedded_tokenizer

    if args.model is None or is_embedded_name(args.model):
        tokenizer = load_embedded_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    n_sequences = args.sequences or ALL_SEQUENCES
    texts = load_data(args.dataset, "eval", tokens=args.context_size * n_sequences)["text"]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return tokenizer, build_eval_tokens(tokenizer, texts, args.context_size, n_sequences, bos)


def run_calibration(args: argparse.Namespace, settings: Any, out: Path) -> dict[str, Any]:
    """--calibrate: ground-truth vs random features through ComSem with the judge; writes
    calibration.json and calibration.md and records the verdict."""
    from bae_lens.comsem.calibrate import (
        CLASS_NAMES,
        build_calibration_set,
        calibrate,
        markdown,
        record_verdict,
    )

    started = time.time()
    classes = args.calibration_classes.split(",") if args.calibration_classes else CLASS_NAMES
    tokenizer, tokens = _calibration_tokens(args)
    cal = build_calibration_set(
        tokenizer, tokens, classes=classes, n_random=args.calibration_random,
        max_samples=args.max_samples, seed=args.seed,
    )  # fmt: skip
    with ExitStack() as stack:
        judge, label = _open_judge(args, out, stack)
        result = calibrate(cal, judge, settings)
    seconds = round(time.time() - started, 1)
    command = "bae-lens comsem " + " ".join(sys.argv[2:])
    if judge.answered > 0:  # a judge that answered nothing has no verdict to keep
        record_verdict(result, _calibration_file(args), {"command": command, "seconds": seconds})
    payload = {
        "command": command,
        "judge": _judge_record(args, judge, label),
        "corpus_tokens": cal.collection.n_tokens,
        "requests_sent": judge.sent,
        "requests_answered": judge.answered,
        "calibration": result.to_json(),
        "seconds": {"total": seconds},
    }
    from bae_lens.runtime import environment

    payload["environment"] = environment()
    (out / "calibration.md").write_text(markdown(result) + "\n")
    (out / "calibration.json").write_text(json.dumps(payload, indent=1))
    return payload


def run_comsem(args: argparse.Namespace) -> dict[str, Any]:
    """Collect, then (unless ``--collect-only``) judge; writes comsem.json and comsem.md."""
    from bae_lens.comsem.calibrate import load_registry, verdict_line
    from bae_lens.comsem.install import ensure_local_judge
    from bae_lens.comsem.score import (
        PROMPT_VERSION,
        ComSemSettings,
        judge_collections,
        markdown_table,
        summarise_llm_free,
    )
    from bae_lens.runtime import environment, set_threads

    started = time.time()
    if args.local_judge and not args.collect_only:
        ensure_local_judge(ask=sys.stdin.isatty())  # before the collection, not after it
    set_threads(args.threads)
    for noisy in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = ComSemSettings(
        m=args.m, n_test=args.n_test, n_negative=args.n_negative, n_features=args.n_features,
        threshold=args.threshold, seed=args.seed,
    )  # fmt: skip
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.calibrate:
        return run_calibration(args, settings, out)
    collections = _collections(args, out)
    collected = time.time()
    payload: dict[str, Any] = {
        "command": "bae-lens comsem " + " ".join(sys.argv[2:]),
        "environment": environment(),
        "settings": settings.__dict__ | {"prompt_version": PROMPT_VERSION},
        "collection": {
            n: {
                "tokens": c.n_tokens,
                "seconds": c.seconds,
                "tokens_per_second": c.tokens_per_second,
            }
            for n, c in collections.items()
        },
    }
    if not args.collect_only:
        with ExitStack() as stack:
            judge, label = _open_judge(args, out, stack)
            rows, features = judge_collections(collections, judge, settings)
        registry = _calibration_file(args)
        calibration = load_registry(registry).get(judge.config.model)
        payload |= {
            "judge": _judge_record(args, judge, label) | {"calibration": calibration},
            "requests_sent": judge.sent,
            "requests_answered": judge.answered,
            "results": rows,
            "features": features,
        }
        verdict = verdict_line(judge.config.model, registry)
        (out / "comsem.md").write_text(markdown_table(rows, label, verdict) + "\n")
    else:
        rows = {n: summarise_llm_free(c, settings) for n, c in collections.items()}
        payload["llm_free_results"] = rows
        label = "none (--collect-only): the LLM-free score only"
        (out / "comsem.md").write_text(markdown_table(rows, label) + "\n")
    payload["seconds"] = {
        "collection": round(collected - started, 1),
        "total": round(time.time() - started, 1),
    }
    (out / "comsem.json").write_text(json.dumps(payload, indent=1))
    return payload


def run(args: argparse.Namespace) -> int:
    from bae_lens.cli.preflight import check_comsem
    from bae_lens.comsem.server import JudgeServerDied

    check_comsem(args)  # before the model loads and the collection
    try:
        payload = run_comsem(args)
    except ModuleNotFoundError as err:
        print(f"bae-lens comsem: error: {err}", file=sys.stderr)
        return 2
    except JudgeServerDied as err:
        print(f"bae-lens comsem: error: {err}", file=sys.stderr)
        print("answers received before the crash are kept in the judge cache", file=sys.stderr)
        return 1
    judged = "results" in payload or "calibration" in payload
    if judged and payload["requests_answered"] == 0:
        print(
            f"bae-lens comsem: error: none of the {payload['requests_sent']} judge requests was "
            f"answered, so there is no score to report (the errors are in "
            f"{args.output}/comsem.json); check the endpoint and the key",
            file=sys.stderr,
        )
        return 1
    if "calibration" in payload:
        print((Path(args.output) / "calibration.md").read_text())
        print(
            f"wall time {payload['seconds']['total']} s; written to {args.output}/calibration.json"
        )
        return 0
    for name, c in payload["collection"].items():
        print(f"{name}: collected {c['tokens']} tokens at {c['tokens_per_second']:.0f} tokens/s")
    print((Path(args.output) / "comsem.md").read_text())
    print(f"wall time {payload['seconds']['total']} s; written to {args.output}/comsem.json")
    return 0
