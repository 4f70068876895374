"""The migration drill: a full stage walk under load, on one process and on two workers.

``scripts/flag_latency.py`` runs the reference backend as its own uvicorn process,
connects old- and new-protocol clients on both endpoints and one raw client that
never reads, keeps the reference traffic and a REST producer going, and walks
``/ws/training`` and ``/ws`` through every stage, the kill switch included, by
rewriting the toggles file. It exits 0 only when every healthy ``/ws`` client got
each model created during the walk exactly once, no client got any event twice,
none was closed, and every worker re-routed within the refresh interval + 1 s.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.reference.support import ROOT
from tests.support import UNIT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "flag_latency.py"
BOUNDED = ["--clients", "48", "--stalled", "1", "--settle", "1.5", "--gap", "1.5"]


def drill(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *BOUNDED, *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120 * UNIT,
        check=False,
    )


def test_drill_on_one_process() -> None:
    result = drill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 fault(s)" in result.stdout


@pytest.mark.redis
def test_drill_on_two_redis_backed_workers() -> None:
    result = drill("--workers", "2", "--broker", "redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 fault(s)" in result.stdout
    assert result.stdout.count("moved)") >= 2 * 7  # both workers re-routed at each change
