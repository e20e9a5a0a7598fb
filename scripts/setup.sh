#!/usr/bin/env bash
# Sets up this checkout on a fresh machine: the dev virtualenv (.venv) with the package and its test
# tools, and with --all also Chromium (for the browser tests) and the real vLLM server environment
# with its tiny models (cached under ~/.cache/vllm_magic, keyed by the lock file's hash).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

if [ "${1:-}" = "--all" ] || [ "${1:-}" = "--vllm" ]; then
    .venv/bin/python scripts/vllm_env.py ensure
fi
if [ "${1:-}" = "--all" ]; then
    bash scripts/install_browser.sh
fi
