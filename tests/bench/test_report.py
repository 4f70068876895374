"""Aggregation, ratios and target verdicts on synthetic session results (no processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.report import aggregate, evaluate_targets, render_table, render_targets, write_png


def session(
    variant: str, *, rate: float, cpu: float, memory: float, p99: float, stall_p99: Any
) -> dict[str, Any]:
    burst = {
        "expected": 100,
        "delivered": 100,
        "complete": True,
        "throughput": rate,
        "p50": p99 / 2,
        "p99": p99,
        "server_cpu_per_msg": cpu,
        "client_cpu_share": 0.5,
        "server_cpu_share": 1.0,
        "mean_bytes": 300.0,
    }
    stall = {
        "expected": 90,
        "delivered": 90 if stall_p99 != "inf" else 1,
        "p99": stall_p99,
        "fill": {"sockets": 1, "paused": 1, "bytes": 1},
    }
    return {
        "variant": variant,
        "n": 5000,
        "deflate": False,
        "errors": [],
        "negotiated_deflate": 0,
        "memory": {"per_connection": memory},
        "bursts": [burst, {**burst, "throughput": rate * 1.1}, {**burst, "throughput": rate * 0.9}],
        "stalls": [stall],
    }


def test_ratios_and_verdicts() -> None:
    rows = aggregate(
        [
            session("legacy", rate=50_000, cpu=20e-6, memory=30_000, p99=0.1, stall_p99="inf"),
            session("service", rate=100_000, cpu=10e-6, memory=20_000, p99=0.05, stall_p99=0.1),
            session("raw", rate=100_000, cpu=8e-6, memory=15_000, p99=0.05, stall_p99=0.05),
        ]
    )
    assert [r.variant for r in rows] == ["legacy", "service", "raw"]
    legacy, service, _ = rows
    assert service.throughput.median == 100_000
    assert (service.throughput.low, service.throughput.high) == pytest.approx((90_000, 110_000))
    assert service.stall_ratio == 2.0
    assert legacy.stall_delivered == pytest.approx(1 / 90)

    verdicts = {(t.name, t.subject): t for t in evaluate_targets(rows)}
    speed = verdicts[("throughput >= 1.6x same-stack legacy", "service")]
    assert speed.value == 2.0 and speed.met
    assert verdicts[("throughput >= 0.9x raw websockets", "service")].met
    memory = verdicts[("memory per idle connection <= 0.6x legacy", "service")]
    assert memory.met is False and memory.gap == "1.11x over"
    stall = verdicts[("10 % stalled: others' p99 <= 1.5x no-stall", "service")]
    assert stall.met is False

    table = render_table(rows)
    assert "| service | 5,000 | off | 100 of 100 |" in table
    assert "blocked (1.1% delivered)" in table
    assert "MISSED (1.11x over)" in render_targets(evaluate_targets(rows))


def test_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = aggregate(
        [session("legacy", rate=50_000, cpu=20e-6, memory=30_000, p99=0.1, stall_p99="inf")]
    )
    path = tmp_path / "chart.png"
    assert write_png(rows, path)
    assert path.read_bytes().startswith(b"\x89PNG")
