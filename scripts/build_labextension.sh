#!/usr/bin/env bash
# Rebuilds the "vLLM chat" sidebar (labextension/ -> vllm_magic/labextension/) after its sources
# change, and writes the stamp that tests/unit/test_labextension_stamp.py checks against them.
# Needs node and npm. Nobody else does: the built output is committed, and wheels and sdists ship it.
set -euo pipefail
cd "$(dirname "$0")/../labextension"
export PATH="$PWD/../.venv/bin:$PATH"  # jupyter-builder, from the dev venv (scripts/setup.sh)

npm ci --no-audit --no-fund
npm run build

# The stamp: sha256 of the `sha256sum` listing of every input, sorted by path (C locale).
inputs=$(find src style package.json package-lock.json tsconfig.json -type f | LC_ALL=C sort)
# shellcheck disable=SC2086  # the paths have no spaces; word splitting lists them
hash=$(sha256sum $inputs | sha256sum | cut -d' ' -f1)
printf '{\n  "inputs_sha256": "%s"\n}\n' "$hash" > ../vllm_magic/labextension/build-stamp.json
echo "built $(du -sh ../vllm_magic/labextension | cut -f1) into vllm_magic/labextension (stamp $hash)"
