#!/usr/bin/env bash
# The main job: the reference backend and its dashboard on http://127.0.0.1:8000
# (in-memory broker, local flags file). Extra arguments go to uvicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/uvicorn reference.app:app --host 127.0.0.1 --port "${PORT:-8000}" "$@"
