"""scripts/bench.py --smoke as CI runs it: real server and client processes, real deliveries.

No timing assertions: the machine may be busy. What must hold is that the
harness measured what it claims to, i.e. every subscriber got every message of
every burst, and the results file has the shape the report relies on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support import UNIT

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench.py"


def test_smoke_run_measures_every_delivery(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out), "--png", str(png)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100 * UNIT,  # the smoke run takes about 10 s; pytest-timeout is 120 s
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = orjson.loads(out.read_bytes())

    rows = {row["variant"]: row for row in document["rows"]}
    assert set(rows) == {"legacy", "service"}
    for name, row in rows.items():
        assert row["n"] == 50 and not row["deflate_offered"], name
        assert row["errors"] == [], name
        assert row["bursts"] == 1, name
        # Delivered counts equal N x burst: every connection got every message once.
        assert row["expected_per_burst"] == 50 * 10, name
        assert row["delivered"] == [50 * 10], name
        assert row["complete"], name
        assert row["rss_per_connection_bytes"]["n"] == 1, name
        assert row["server_cpu_per_msg_s"]["median"] > 0, name
    for session in document["sessions"]:
        burst = session["bursts"][0]
        assert burst["per_connection_min"] == burst["per_connection_max"] == 10
        assert burst["server_done"] and burst["server_error"] is None
        assert session["stalls"], "the slow-consumer run did not happen"
        assert session["stalls"][0]["stalled"] == 5
    assert "| legacy | 50 | off |" in completed.stdout
    assert png.read_bytes().startswith(b"\x89PNG")
