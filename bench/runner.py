"""Run the matrix: for each (N, compression, variant) a server process and a client process.

The server (``python -m bench.serve``) and the client (``python -m bench.client``)
are separate processes of this machine, talking over 127.0.0.1 only. Each session
is bounded in time; the server is terminated (then killed) when the session ends,
whatever happened, and so is the client if it overruns.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .variants import VARIANTS

__all__ = ["ROOT", "Plan", "free_port", "run_plan", "sessions"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    """What to run: every variant at every N with every compression setting."""

    variants: Sequence[str]
    ns: Sequence[int]
    deflates: Sequence[bool]
    repeat: int = 3
    burst: int = 20
    size: int = 300
    sessions: int = 1
    stall: bool = True
    unit: float = 1.0
    cprofile: Path | None = None
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
        if self.repeat < 1 or self.sessions < 1 or self.burst < 1:
            raise ValueError("repeat, sessions and burst must be at least 1")
        if any(n < 1 for n in self.ns):
            raise ValueError("N must be at least 1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sessions(plan: Plan) -> Iterator[tuple[int, bool, str, int]]:
    """``(n, deflate, variant, session)`` in run order (small N first)."""
    for n in plan.ns:
        for deflate in plan.deflates:
            for variant in plan.variants:
                for session in range(plan.sessions):
                    yield n, deflate, variant, session


def _client_budget(plan: Plan, n: int) -> float:
    per_burst = 10 + n * plan.burst * 200e-6
    bursts = (plan.repeat + 2) * (per_burst + 60)  # worst case: every wait runs out
    return (120 + n / 50 + bursts) * plan.unit


def run_session(plan: Plan, n: int, deflate: bool, variant: str, workdir: Path) -> dict[str, Any]:
    """One server process, one client process; returns the client's results."""
    port = free_port()
    tag = f"{variant}-n{n}-{'deflate' if deflate else 'plain'}-{port}"
    server_log = workdir / f"{tag}.server.log"
    out = workdir / f"{tag}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server_argv = [plan.python, "-m", "bench.serve", "--variant", variant, "--port", str(port)]
    if plan.cprofile is not None:
        plan.cprofile.mkdir(parents=True, exist_ok=True)
        server_argv += ["--cprofile", str(plan.cprofile / f"{tag}.prof")]
    with server_log.open("wb") as log:
        server = subprocess.Popen(
            server_argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    result: dict[str, Any]
    try:
        argv = [
            plan.python,
            "-m",
            "bench.client",
            "--url",
            f"ws://127.0.0.1:{port}",
            "--n",
            str(n),
            "--burst",
            str(plan.burst),
            "--size",
            str(plan.size),
            "--repeat",
            str(plan.repeat),
            "--unit",
            str(plan.unit),
            "--out",
            str(out),
        ]
        if deflate:
            argv.append("--deflate")
        if not plan.stall:
            argv.append("--no-stall")
        started = time.monotonic()
        try:
            client = subprocess.run(
                argv,
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=_client_budget(plan, n),
                check=False,
                stdin=subprocess.DEVNULL,
            )
            stderr = client.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            stderr = "client overran its time budget and was killed"
        if out.exists():
            result = orjson.loads(out.read_bytes())
        else:
            result = {"errors": [f"client wrote no results: {stderr[-2000:]}"]}
        result["wall_seconds"] = time.monotonic() - started
        if server.poll() is not None:
            result["errors"].append(f"server exited early with status {server.returncode}")
    finally:
        _stop(server)
    if result["errors"]:
        result["server_log_tail"] = server_log.read_text(errors="replace")[-3000:]
    result.update(variant=variant, n=n, deflate=deflate)
    return result


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def run_plan(
    plan: Plan, progress: Callable[[str], None] = lambda line: None
) -> list[dict[str, Any]]:
    """Run every session of ``plan`` in order; returns the raw per-session results."""
    results = []
    todo = list(sessions(plan))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for index, (n, deflate, variant, _session) in enumerate(todo, 1):
            result = run_session(plan, n, deflate, variant, Path(tmp))
            results.append(result)
            progress(_progress_line(index, len(todo), result))
    return results


def _progress_line(index: int, total: int, result: dict[str, Any]) -> str:
    bursts = result.get("bursts") or []
    rates = sorted(b["throughput"] for b in bursts if b.get("throughput"))
    rate = f"{rates[len(rates) // 2]:,.0f} msg/s" if rates else "no throughput"
    deflate = "deflate" if result["deflate"] else "plain"
    status = "; ".join(result["errors"]) if result["errors"] else "ok"
    return (
        f"[{index}/{total}] {result['variant']} N={result['n']} {deflate}: {rate}, "
        f"{result.get('wall_seconds', 0):.1f}s, {status}"
    )
