#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs everything it needs, then runs the fast tier
# (loopback server), the integration tier (real vLLM) and the browser tier (JupyterLab in Chromium).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not integration and not browser"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --all
exec .venv/bin/python -m pytest "$@"
