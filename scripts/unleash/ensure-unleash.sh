#!/usr/bin/env bash
# A local Unleash server for development and the flag tests (idempotent).
#
#   bash scripts/unleash/ensure-unleash.sh          # install if needed, start if down, print URL
#   bash scripts/unleash/ensure-unleash.sh stop     # stop the server this script started
#   bash scripts/unleash/ensure-unleash.sh status   # exit 0 and print URL when it is up
#
# Installs the npm package unleash-server@$UNLEASH_VERSION into $UNLEASH_HOME
# (default .unleash/, ignored by git) with install scripts off, creates the
# PostgreSQL database if missing, and starts the server in the background on
# 127.0.0.1:$UNLEASH_PORT with a pre-set admin and client API token. Downloads
# nothing but npm packages. Fails (never skips) when the server cannot start.
#
# Environment (all optional):
#   UNLEASH_PORT          4242
#   UNLEASH_HOME          <repo>/.unleash
#   UNLEASH_DB_NAME       unleash_test   (UNLEASH_DB_HOST/_PORT/_USER: 127.0.0.1/5432/postgres)
#   UNLEASH_ADMIN_TOKEN   *:*.ws-migration-admin-token
#   UNLEASH_CLIENT_TOKEN  *:development.ws-migration-client-token
#   UNLEASH_ADMIN_USER / UNLEASH_ADMIN_PASSWORD   admin / unleash4all (UI login, set on a new database)
#   UNLEASH_START_TIMEOUT seconds to wait for /health (default 180: the first start migrates)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/scripts/unleash"
UNLEASH_VERSION="7.4.1"
export UNLEASH_HOME="${UNLEASH_HOME:-$ROOT/.unleash}"
export UNLEASH_HOST="127.0.0.1"
export UNLEASH_PORT="${UNLEASH_PORT:-4242}"
export UNLEASH_DB_HOST="${UNLEASH_DB_HOST:-127.0.0.1}"
export UNLEASH_DB_PORT="${UNLEASH_DB_PORT:-5432}"
export UNLEASH_DB_USER="${UNLEASH_DB_USER:-postgres}"
export UNLEASH_DB_NAME="${UNLEASH_DB_NAME:-unleash_test}"
export UNLEASH_ADMIN_TOKEN="${UNLEASH_ADMIN_TOKEN:-*:*.ws-migration-admin-token}"
export UNLEASH_CLIENT_TOKEN="${UNLEASH_CLIENT_TOKEN:-*:development.ws-migration-client-token}"
START_TIMEOUT="${UNLEASH_START_TIMEOUT:-180}"

BASE="http://$UNLEASH_HOST:$UNLEASH_PORT"
# Keyed by port, not by checkout: any checkout's "stop" stops the server that
# this script started on that port, wherever it was started from.
PIDFILE="${UNLEASH_RUN_DIR:-${TMPDIR:-/tmp}}/ws-migration-unleash-$UNLEASH_PORT.pid"
LOGFILE="$UNLEASH_HOME/unleash-$UNLEASH_PORT.log"
STAMP="$UNLEASH_HOME/.installed-$UNLEASH_VERSION"

log() { echo "ensure-unleash: $*" >&2; }

healthy() {
    curl -fsS --max-time 2 "$BASE/health" 2>/dev/null | grep -q '"GOOD"'
}

# The client token must work, or this is someone else's Unleash on our port.
tokens_work() {
    curl -fsS --max-time 5 -o /dev/null -H "Authorization: $UNLEASH_CLIENT_TOKEN" \
        "$BASE/api/client/features"
}

our_pid() {  # the pid of the server this script started, if it still runs
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install() {
    [ -f "$STAMP" ] && return 0
    command -v npm >/dev/null || { log "npm is required (Node 20+)"; return 1; }
    mkdir -p "$UNLEASH_HOME"
    cat >"$UNLEASH_HOME/package.json" <<EOF
{
  "name": "ws-migration-unleash",
  "private": true,
  "dependencies": { "unleash-server": "$UNLEASH_VERSION" }
}
EOF
    log "installing unleash-server@$UNLEASH_VERSION into $UNLEASH_HOME (takes a minute)"
    # --ignore-scripts: no package's install hook may build or download anything.
    (cd "$UNLEASH_HOME" && SCARF_ANALYTICS=false npm install --no-audit --no-fund \
        --ignore-scripts --loglevel=error >"$UNLEASH_HOME/npm-install.log" 2>&1) || {
        log "npm install failed:"
        tail -n 30 "$UNLEASH_HOME/npm-install.log" >&2
        return 1
    }
    rm -f "$UNLEASH_HOME"/.installed-*
    touch "$STAMP"
}

ensure_db() {
    local psql=(psql -h "$UNLEASH_DB_HOST" -p "$UNLEASH_DB_PORT" -U "$UNLEASH_DB_USER" -d postgres -tA)
    if ! "${psql[@]}" -c "select 1 from pg_database where datname = '$UNLEASH_DB_NAME'" \
        | grep -q 1; then
        log "creating database $UNLEASH_DB_NAME"
        "${psql[@]}" -c "create database \"$UNLEASH_DB_NAME\"" >/dev/null
    fi
}

start() {
    if healthy; then
        tokens_work || { log "$BASE answers but rejects the client token"; return 1; }
        echo "$BASE/api"
        return 0
    fi
    install
    ensure_db
    if ! our_pid >/dev/null; then
        log "starting Unleash on $BASE (log: $LOGFILE)"
        setsid node --no-deprecation "$HERE/start-unleash.mjs" >"$LOGFILE" 2>&1 </dev/null 9>&- &
        echo $! >"$PIDFILE"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until healthy; do
        if ! our_pid >/dev/null; then
            log "Unleash exited during start:"
            tail -n 40 "$LOGFILE" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "Unleash did not become healthy within ${START_TIMEOUT}s:"
            tail -n 40 "$LOGFILE" >&2
            return 1
        fi
        sleep 0.25
    done
    tokens_work || { log "$BASE rejects the client token"; return 1; }
    echo "$BASE/api"
}

stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        if healthy; then
            log "a server answers on $BASE that this script did not start; not stopping it"
            return 1
        fi
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "Unleash (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid"
    fi
    rm -f "$PIDFILE"
}

mkdir -p "$UNLEASH_HOME"
case "${1:-start}" in
    start)
        # One install/start at a time (CI and a test fixture may race).
        exec 9>"$UNLEASH_HOME/.lock"
        flock 9
        start
        ;;
    stop) stop ;;
    status)
        healthy || { log "Unleash is not running on $BASE"; exit 1; }
        echo "$BASE/api"
        ;;
    *)
        echo "usage: $0 [start|stop|status]" >&2
        exit 2
        ;;
esac
