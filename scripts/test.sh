#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: install, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/ensure-services.sh
bash scripts/ensure-browser.sh
bash scripts/ensure-node-clients.sh
if [ -x scripts/unleash/ensure-unleash.sh ] || [ -f scripts/unleash/ensure-unleash.sh ]; then
    bash scripts/unleash/ensure-unleash.sh
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
mkdir -p artifacts
pytest -p no:cacheprovider --junitxml=artifacts/junit.xml "$@"
echo "== legacy vs new comparison (scenarios/)"
bash .ci/compare
