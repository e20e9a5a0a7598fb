#!/usr/bin/env bash
# Sets up this checkout and runs the quickstart notebook against VLLM_BASE_URL, or, when it is
# unset, against the embedded default: a local real vLLM with the project's tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VLLM_BASE_URL:-}" ]; then
    bash scripts/setup.sh --vllm
else
    bash scripts/setup.sh
fi
exec .venv/bin/python scripts/quickstart.py
