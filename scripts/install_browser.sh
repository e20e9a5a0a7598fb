#!/usr/bin/env bash
# Install Debian's Chromium for the browser test tier (tests/e2e).
#
# Why: Playwright's own `playwright install` downloads a browser build from a host
# that is not reachable here, so the e2e tests drive Debian's packaged Chromium at
# /usr/bin/chromium instead. A fresh machine (or a fresh CI box) does not have it,
# so the project installs it itself. Idempotent: a fast no-op when it is present.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser.sh: installing chromium (apt-get) ..." >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser.sh: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "install_browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo chromium installed)" >&2
