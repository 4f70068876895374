#!/usr/bin/env bash
# Make the browser tests runnable (idempotent): Debian's Chromium and Playwright.
#
#   bash scripts/ensure-browser.sh        # install what is missing, print the browser path
#
# Chromium comes from Debian's packages only (apt-get), never from a browser
# download: the tests launch /usr/bin/chromium through Playwright's bundled
# driver, so `playwright install` is never run. The Python package `playwright`
# is installed into .venv when it is not importable there.
#
# Environment (all optional):
#   CHROMIUM   the browser to use (default: /usr/bin/chromium)
#   PYTHON     the interpreter whose environment needs playwright (default: .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { echo "ensure-browser: $*" >&2; }

if [ ! -x "$CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1; then
    command -v apt-get >/dev/null || { log "apt-get is required to install chromium"; exit 1; }
    log "installing Debian's chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # Without recommends (upower, udev, a print dialog...); fonts-liberation for legible text.
    apt-get install -y -qq --no-install-recommends chromium fonts-liberation >&2
fi
if [ ! -x "$CHROMIUM" ]; then
    CHROMIUM="$(command -v chromium)"
fi

if ! "$PYTHON" -c "import playwright.async_api" >/dev/null 2>&1; then
    log "installing the playwright package into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    # The wheel bundles its driver; no browser is downloaded by installing it.
    "$PYTHON" -m pip install --quiet "playwright>=1.45"
fi

# (Debian's launcher may print a harmless shell warning about /dev/shm on stderr.)
"$CHROMIUM" --version >&2 2>/dev/null || { log "$CHROMIUM does not start"; exit 1; }
echo "$CHROMIUM"
