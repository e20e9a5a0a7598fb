#!/usr/bin/env bash
# Sets up this checkout on a fresh machine: the dev virtualenv (.venv) with the package and its test
# tools, and with --all also Chromium (for the browser tests) and the real vLLM server environment
# with its tiny models, vllm-router and LiteLLM's proxy (cached under ~/.cache/vllm_magic, keyed by their
# lock files' hashes).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-12)
# The sidebar labextension's built output is committed: the editable install must not run npm.
export SKIP_JUPYTER_BUILDER=1
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# The editable install copies the built "vLLM chat" sidebar into the venv's labextensions (wheel
# shared-data), where JupyterLab loads it: copy it again when scripts/build_labextension.sh rebuilt it.
# (No `jupyter labextension develop` symlink: pip would then uninstall through it, into the checkout.)
sidebar=.venv/share/jupyter/labextensions/vllm-magic-sidebar
if ! cmp -s vllm_magic/labextension/build-stamp.json "$sidebar/build-stamp.json"; then
    rm -rf "$sidebar"
    .venv/bin/python -m pip install --quiet --no-deps -e .
fi

if [ "${1:-}" = "--all" ] || [ "${1:-}" = "--vllm" ]; then
    .venv/bin/python scripts/vllm_env.py ensure
    .venv/bin/python scripts/reach_env.py ensure
fi
if [ "${1:-}" = "--all" ]; then
    bash scripts/install_browser.sh
fi
