#!/usr/bin/env bash
# Make the strict Node client tests runnable (idempotent): `npm ci` in tests/clients.
#
#   bash scripts/ensure-node-clients.sh
#
# Installs exactly what tests/clients/package-lock.json pins (Node's ws library)
# into tests/clients/node_modules, again only when the lock file changed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/tests/clients"
log() { echo "ensure-node-clients: $*" >&2; }

command -v node >/dev/null || { log "node is required (Node 20)"; exit 1; }
command -v npm >/dev/null || { log "npm is required"; exit 1; }
stamp="$DIR/node_modules/.installed-$(sha256sum "$DIR/package-lock.json" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    log "npm ci in tests/clients"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$stamp"
fi
node -e "require('$DIR/node_modules/ws/package.json')" >/dev/null
