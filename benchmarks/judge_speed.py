"""Speed of the offline ComSem judge (llama.cpp's server, as bae_lens builds it) on this CPU.

Starts :class:`bae_lens.comsem.server.LocalJudgeServer` on the embedded SmolLM2 GGUF, sends
``--requests`` chat completions shaped like ComSem's (a prompt of about ``--prompt-words``
random words, ``--max-tokens`` answer tokens), one at a time after a warm-up, and reports the
median latency and the prompt and completion tokens per second from the server's usage
counts. Writes JSON (with the build flags, CPU and versions) and prints a line.

    python benchmarks/judge_speed.py --out benchmarks/results/comsem/judge_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from importlib.metadata import version
from pathlib import Path

from bae_lens.comsem.install import build_target
from bae_lens.comsem.server import LocalJudgeServer
from bae_lens.runtime import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--prompt-words", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import openai

    vocabulary = [
        "the",
        "feature",
        "fires",
        "on",
        "words",
        "such",
        "as",
        "river",
        "ship",
        "captain",
        "whale",
        "letter",
        "marriage",
        "estate",
        "sister",
        "evening",
        "morning",
        "carriage",
        "ball",
        "officer",
        "fortune",
        "heart",
        "quite",
        "very",
    ]
    rows = []
    with LocalJudgeServer(n_threads=args.threads) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        for i in range(args.requests + 1):
            # a different text each time: llama.cpp reuses the KV cache of a shared prefix
            rng = random.Random(i)
            text = " ".join(rng.choice(vocabulary) for _ in range(args.prompt_words))
            started = time.perf_counter()
            response = client.chat.completions.create(
                model=server.model,
                messages=[{"role": "user", "content": text + "\nDescribe the feature."}],
                max_tokens=args.max_tokens,
                temperature=0.0,
            )
            seconds = time.perf_counter() - started
            usage = response.usage
            if i == 0 or usage is None:
                continue  # warm-up
            rows.append((seconds, usage.prompt_tokens, usage.completion_tokens))
    seconds = [r[0] for r in rows]
    total = sum(seconds)
    result = {
        "command": "python benchmarks/judge_speed.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "requests": len(rows),
        "median_latency_seconds": round(statistics.median(seconds), 3),
        "prompt_tokens_per_request": round(statistics.mean(r[1] for r in rows), 1),
        "completion_tokens_per_request": round(statistics.mean(r[2] for r in rows), 1),
        "tokens_per_second_all": round(sum(r[1] + r[2] for r in rows) / total, 1),
        "build": dict(zip(("target", "cmake_args"), build_target(), strict=True)),
        "llama_cpp_python": version("llama-cpp-python"),
        "threads": args.threads,
        "cpu": cpu_name(),
        "python": platform.python_version(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{result['requests']} requests: median {result['median_latency_seconds']} s for "
        f"{result['prompt_tokens_per_request']} prompt + "
        f"{result['completion_tokens_per_request']} completion tokens "
        f"({result['tokens_per_second_all']} tokens/s), build {result['build']['target']}, "
        f"{result['cpu']}"
    )


if __name__ == "__main__":
    main()
