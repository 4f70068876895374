#!/usr/bin/env bash
# Start the local services the integration tests use if they are down (idempotent).
# Fails (never skips) when one cannot be started.
set -euo pipefail

wait_for() {  # name, check command
    for _ in $(seq 1 50); do
        if eval "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "ensure-services: $1 is not reachable" >&2
    return 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis "redis-cli -h 127.0.0.1 -p 6379 ping"

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for postgresql "pg_isready -h 127.0.0.1 -p 5432"
