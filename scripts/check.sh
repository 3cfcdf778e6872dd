#!/usr/bin/env bash
# Lint, format check, type check and the test suite: the command CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
# In CI the offline judge is installed (setup.sh --with-local-judge): its end-to-end test
# must run there, so a missing judge fails instead of skipping.
if [ "${CI:-}" = true ]; then export BAE_LENS_REQUIRE_LOCAL_JUDGE=1; fi
.venv/bin/ruff check bae_lens tests benchmarks
.venv/bin/ruff format --check bae_lens tests benchmarks
.venv/bin/mypy bae_lens
.venv/bin/python -m pytest -q "$@"
