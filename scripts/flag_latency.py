"""Flag-change latency, delivery lag and exactly-once on a loaded backend (issue 13).

    python scripts/flag_latency.py                          # 300 clients, toggles file
    python scripts/flag_latency.py --decider unleash        # the Unleash server on :4242
    python scripts/flag_latency.py --clients 400 --json /tmp/flag_latency.json
    python scripts/flag_latency.py --workers 2 --broker redis://127.0.0.1:6379/0

Runs the reference backend (``reference.app.create_app``) as its own uvicorn
process on 127.0.0.1 with the reference traffic (the autopilot's training
sessions plus a few started over REST, 0.5 s epochs), connects ``--clients``
real ``websockets`` clients that keep reading (old and new protocol, on both
endpoints), then walks the flags through a few changes, the kill switch
included, and prints for each change:

- ``flip``: seconds from the change (the file replaced, or the Admin API call
  answered) until ``manager.reroute()`` ran (the server's ``last_reroute.at``);
- delivery lag: receive time minus the payload's ``timestamp``, p50/p99/max,
  over the whole run and around each change;
- exactly-once among healthy clients: a producer creates ``--models-per-second``
  models over REST during the whole walk (each worker's share, triggered once);
  every ``/ws`` client must get each ``model_created`` exactly once, and no
  client any event twice, while ``--stalled`` raw TCP clients never read.

With ``--decider file`` the changes are atomic rewrites of the backend's toggles
file (what ``ws-migration flags set`` does); with ``--decider unleash`` they go
through the Admin API of the server ``scripts/unleash/ensure-unleash.sh``
starts, on toggles of this run's own (unique names, deleted afterwards), with
``--refresh`` seconds between the backend's fetches. Target: every flip within
the refresh interval (file: the 0.25 s watch) + 1 s.

Bounded: about ``--settle`` + 6 x ``--gap`` seconds of measurement, under 60 s
in all with the defaults. Exit status: 0 measured, every flip within target
and nothing lost or duplicated; 1 a flip missed the target or never happened,
or a healthy client lost or repeated an event; 2 setup failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Run as a file, this script's folder is first on sys.path, where scripts/flags.py
# would shadow the flags package: the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from flags import (
    PACKAGED_TOGGLES_FILE,
    read_document,
    set_endpoint_stage,
    set_kill_switch,
    write_document,
)
from shim.stages import Stage

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/ws", "/ws/training")
UNLEASH_URL = os.environ.get("UNLEASH_URL", "http://127.0.0.1:4242/api")
ADMIN_TOKEN = os.environ.get("UNLEASH_ADMIN_TOKEN", "*:*.ws-migration-admin-token")
CLIENT_TOKEN = os.environ.get("UNLEASH_CLIENT_TOKEN", "*:development.ws-migration-client-token")
ENV = "development"
OPS_TOKEN = "flag-latency-ops-token"


# -- the backend process ------------------------------------------------------------


def make_app() -> Any:
    """The uvicorn factory of the backend: the reference app with this run's flags.

    Configured by ``FLAG_LATENCY_*`` variables (set by :func:`run`). Every
    ``manager.reroute()`` appends ``{"pid", "at", "changed", "connections",
    "seconds"}`` to ``FLAG_LATENCY_REROUTES``, so each worker's flips are seen.
    """
    from flags import FlagSettings
    from reference.app import create_app
    from reference.config import Settings

    env = os.environ
    if env["FLAG_LATENCY_DECIDER"] == "unleash":
        flag_settings = FlagSettings(
            toggles_file=Path(env["FLAG_LATENCY_TOGGLES"]),
            unleash_url=UNLEASH_URL,
            api_token=CLIENT_TOKEN,
            app_name="ws-migration-flag-latency",
            refresh_interval=int(env["FLAG_LATENCY_REFRESH"]),
            report_to_server=False,
            stage_toggle=env["FLAG_LATENCY_STAGE_TOGGLE"],
            kill_switch_toggle=env["FLAG_LATENCY_KILL_TOGGLE"],
        )
    else:
        flag_settings = FlagSettings(toggles_file=Path(env["FLAG_LATENCY_TOGGLES"]))
    app = create_app(Settings.from_env(), flag_settings)
    manager = app.state.manager
    reroute = manager.reroute
    journal = Path(env["FLAG_LATENCY_REROUTES"])

    def logged_reroute() -> int:
        changed: int = reroute()
        line = {"pid": os.getpid(), **manager.last_reroute}
        with journal.open("ab") as out:
            out.write(orjson.dumps(line) + b"\n")
        return changed

    manager.reroute = logged_reroute
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- clients ------------------------------------------------------------------------


def payload_time(frame: Any) -> float | None:
    """The payload's ``timestamp`` as epoch seconds (naive ISO = local time), if any."""
    if not isinstance(frame, dict):
        return None
    stamp = frame.get("timestamp")
    if not isinstance(stamp, str):
        data = frame.get("data")
        stamp = data.get("timestamp") if isinstance(data, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


#: Envelope types that are the protocol, not events (never counted as duplicates).
PROTOCOL_TYPES = frozenset(
    {"connection_established", "subscribed", "unsubscribed", "pong", "heartbeat", "error"}
)


@dataclass
class Ledger:
    """What one client received: each model's count and repeated events."""

    endpoint: str
    fmt: str
    models: dict[str, int] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    repeated: int = 0
    events: int = 0
    closed_early: bool = False

    def note(self, raw: str | bytes, frame: Any) -> None:
        if not isinstance(frame, dict) or frame.get("type") in PROTOCOL_TYPES:
            return
        self.events += 1
        key = hash(raw)
        if key in self.seen:
            self.repeated += 1
        self.seen.add(key)
        name = model_name(frame)
        if name is not None:
            self.models[name] = self.models.get(name, 0) + 1


def model_name(frame: dict[str, Any]) -> str | None:
    """The name of a ``model_created`` event, in the old shape or in the envelope."""
    if frame.get("type") != "model_created":
        return None
    name = frame.get("model_name")
    data = frame.get("data")
    if name is None and isinstance(data, dict) and isinstance(data.get("model_info"), dict):
        name = data["model_info"].get("name")
    return name if isinstance(name, str) else None


@dataclass
class Lags:
    """(receive time, lag) of every timestamped frame, all clients together."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    frames: int = 0
    closed: int = 0

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at < end]


async def client(url: str, fmt: str, lags: Lags, ledger: Ledger) -> ClientConnection:
    subprotocols = [Subprotocol("envelope.v1")] if fmt == "new" else None
    ws = await connect(url, subprotocols=subprotocols, open_timeout=20, max_queue=None)

    async def read() -> None:
        try:
            async for raw in ws:
                now = time.time()
                lags.frames += 1
                frame = orjson.loads(raw)
                ledger.note(raw, frame)
                sent = payload_time(frame)
                if sent is not None:
                    lags.samples.append((now, now - sent))
        except ConnectionClosed:
            ledger.closed_early = True
        finally:
            lags.closed += 1

    task = asyncio.get_running_loop().create_task(read())
    ws.reader_task = task  # type: ignore[attr-defined]  # kept alive with the socket
    return ws


def stalled_client(port: int, path: str) -> socket.socket:
    """A raw TCP client that completes the handshake and never reads again (4 KiB buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer and len(answer) < 4096:
        answer += sock.recv(1)
    if not answer.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(f"stalled client refused: {answer[:80]!r}")
    return sock


async def model_producer(base: str, rate: float, posted: list[str]) -> None:
    """Create ``rate`` models a second over REST until cancelled (names drill-0, ...)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for i in range(1_000_000):
            started = time.monotonic()
            name = f"drill-{i}"
            answer = await http.post("/api/models", json={"name": name})
            if answer.status_code == 200:
                posted.append(name)
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


def delivery_faults(ledgers: Sequence[Ledger], posted: Sequence[str]) -> list[str]:
    """Healthy clients that lost or repeated an event, one line each."""
    faults: list[str] = []
    for index, ledger in enumerate(ledgers):
        who = f"client {index} ({ledger.fmt}, {ledger.endpoint})"
        if ledger.closed_early:
            faults.append(f"{who}: closed during the run")
        if ledger.repeated:
            faults.append(f"{who}: {ledger.repeated} event(s) received twice")
        if ledger.endpoint == "/ws":
            lost = [name for name in posted if ledger.models.get(name, 0) == 0]
            twice = [name for name in posted if ledger.models.get(name, 0) > 1]
            if lost:
                faults.append(f"{who}: lost {len(lost)} of {len(posted)} models, e.g. {lost[:3]}")
            if twice:
                faults.append(f"{who}: {len(twice)} models more than once, e.g. {twice[:3]}")
    return faults


async def dashboard(base: str, polls: Lags) -> None:
    """A dashboard's migration panel: GET /api/migration every second, one at a time."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        while True:
            started = time.time()
            with contextlib.suppress(httpx.HTTPError):
                await http.get("/api/migration")
                polls.samples.append((started, time.time() - started))
            await asyncio.sleep(max(0.0, 1.0 - (time.time() - started)))


# -- flag changes ---------------------------------------------------------------------


class FileFlags:
    """Changes through the toggles file, as ``ws-migration flags`` writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def setup(self) -> None:
        doc = set_kill_switch(read_document(self.path), False)
        for endpoint in ENDPOINTS:
            doc = set_endpoint_stage(doc, endpoint, Stage.LEGACY)
        write_document(self.path, doc)

    async def stage(self, endpoint: str, stage: Stage) -> None:
        def edit() -> None:
            write_document(self.path, set_endpoint_stage(read_document(self.path), endpoint, stage))

        await asyncio.to_thread(edit)

    async def kill(self, on: bool) -> None:
        def edit() -> None:
            write_document(self.path, set_kill_switch(read_document(self.path), on))

        await asyncio.to_thread(edit)

    async def cleanup(self) -> None:
        return None


class UnleashFlags:
    """Changes through the Unleash Admin API, on toggles of this run's own."""

    def __init__(self, http: httpx.AsyncClient, stage_toggle: str, kill_toggle: str) -> None:
        self.http = http
        self.stage_toggle, self.kill_toggle = stage_toggle, kill_toggle
        self.rules: dict[str, str] = {}
        self.created: list[str] = []

    def _feature(self, name: str) -> str:
        return f"/admin/projects/default/features/{name}"

    def _rule(self, endpoint: str, stage: Stage) -> dict[str, Any]:
        doc = set_endpoint_stage({"features": []}, endpoint, stage, toggle=self.stage_toggle)
        strategy: dict[str, Any] = doc["features"][0]["strategies"][0]
        return strategy

    async def _ok(self, answer: Awaitable[httpx.Response], *codes: int) -> httpx.Response:
        response = await answer
        if response.status_code not in codes:
            raise RuntimeError(f"{response.request.method} {response.url}: {response.text}")
        return response

    async def setup(self) -> None:
        await self._ok(self.http.post("/admin/context", json={"name": "endpoint"}), 201, 409)
        for name, kind in ((self.stage_toggle, "operational"), (self.kill_toggle, "kill-switch")):
            await self._ok(
                self.http.post(
                    "/admin/projects/default/features", json={"name": name, "type": kind}
                ),
                201,
            )
            self.created.append(name)
        strategies = f"{self._feature(self.stage_toggle)}/environments/{ENV}/strategies"
        for endpoint in ENDPOINTS:
            answer = await self._ok(
                self.http.post(strategies, json=self._rule(endpoint, Stage.LEGACY)), 200
            )
            self.rules[endpoint] = answer.json()["id"]
        await self._ok(
            self.http.post(f"{self._feature(self.stage_toggle)}/environments/{ENV}/on"), 200
        )
        kill_rollout = {
            "name": "flexibleRollout",
            "parameters": {"rollout": "100", "groupId": self.kill_toggle},
        }
        await self._ok(
            self.http.post(
                f"{self._feature(self.kill_toggle)}/environments/{ENV}/strategies",
                json=kill_rollout,
            ),
            200,
        )

    async def stage(self, endpoint: str, stage: Stage) -> None:
        rule = self.rules[endpoint]
        url = f"{self._feature(self.stage_toggle)}/environments/{ENV}/strategies/{rule}"
        await self._ok(self.http.put(url, json=self._rule(endpoint, stage)), 200)

    async def kill(self, on: bool) -> None:
        url = f"{self._feature(self.kill_toggle)}/environments/{ENV}/{'on' if on else 'off'}"
        await self._ok(self.http.post(url), 200)

    async def cleanup(self) -> None:
        for name in self.created:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(self._feature(name))
                await self.http.delete(f"/admin/archive/{name}")


# -- the run --------------------------------------------------------------------------


@dataclass
class Flip:
    what: str
    started: float
    #: pid -> (seconds from the change to that worker's reroute, routes it moved)
    workers: dict[int, tuple[float, int]] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        """The slowest worker's; None while a worker has not re-routed."""
        return max(s for s, _ in self.workers.values()) if self.workers else None


def quantiles(values: Sequence[float]) -> str:
    if not values:
        return "no frames"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered):6.3f} s  p99 {p99:6.3f} s  "
        f"max {ordered[-1]:6.3f} s  ({len(ordered)} frames)"
    )


def reroutes(journal: Path) -> list[dict[str, Any]]:
    if not journal.exists():
        return []
    return [orjson.loads(line) for line in journal.read_bytes().splitlines() if line.strip()]


async def wait_rerouted(journal: Path, flip: Flip, workers: set[int], timeout: float) -> None:
    """Wait until every worker with clients logged a reroute that moved routes after the change."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in reroutes(journal):
            pid = int(entry["pid"])
            if entry["at"] > flip.started and entry["changed"] > 0 and pid not in flip.workers:
                flip.workers[pid] = (entry["at"] - flip.started, int(entry["changed"]))
        if workers <= set(flip.workers):
            return
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="flag-latency-"))
    toggles = work / "toggles.json"
    shutil.copyfile(PACKAGED_TOGGLES_FILE, toggles)
    journal = work / "reroutes.jsonl"
    port = args.port or free_port()
    prefix = f"flag-latency-{uuid.uuid4().hex[:8]}"
    target = (args.refresh if args.decider == "unleash" else 0.25) + 1.0
    admin: httpx.AsyncClient | None = None
    flags: FileFlags | UnleashFlags
    if args.decider == "unleash":
        admin = httpx.AsyncClient(
            base_url=UNLEASH_URL, headers={"Authorization": ADMIN_TOKEN}, timeout=10
        )
        flags = UnleashFlags(admin, f"{prefix}-stage", f"{prefix}-kill")
    else:
        flags = FileFlags(toggles)
    env = {
        **os.environ,
        "BROKER_URL": broker_url(args.broker, prefix),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": args.log_level,
        "TRAINING_AUTOPILOT_SECONDS": str(args.autopilot),
        "TRAINING_EPOCH_SECONDS": "0.5",
        "WS_MIGRATION_OPS_TOKEN": OPS_TOKEN,
        "FLAG_LATENCY_DECIDER": args.decider,
        "FLAG_LATENCY_TOGGLES": str(toggles),
        "FLAG_LATENCY_REFRESH": str(args.refresh),
        "FLAG_LATENCY_STAGE_TOGGLE": f"{prefix}-stage",
        "FLAG_LATENCY_KILL_TOGGLE": f"{prefix}-kill",
        "FLAG_LATENCY_REROUTES": str(journal),
    }
    for name in ("UNLEASH_URL", "WS_MIGRATION_FORCE_STAGE", "WS_MIGRATION_TOGGLES", "FLAGS_FILE"):
        env.pop(name, None)
    log_path = work / "server.log"
    server: subprocess.Popen[bytes] | None = None
    sockets: list[ClientConnection] = []
    ledgers: list[Ledger] = []
    stalled: list[socket.socket] = []
    posted: list[str] = []
    faults: list[str] = []
    flips: list[Flip] = []
    lags = Lags()
    measure_from = measured_until = time.time()
    try:
        await flags.setup()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "flag_latency:make_app",
            "--app-dir",
            str(ROOT / "scripts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ]
        server = start_backend(command, env, log_path)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 30
            while len({e["pid"] for e in reroutes(journal)}) < args.workers:
                # Each worker's lifespan ends with one reroute(): all of them started.
                if server.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(), file=sys.stderr)
                    print("flag_latency: the backend did not start", file=sys.stderr)
                    return 2
                await asyncio.sleep(0.1)
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)

            # Clients: two in three on /ws, old and new protocol alternating.
            plan = [
                (ENDPOINTS[0] if i % 3 else ENDPOINTS[1], "new" if i % 2 else "old")
                for i in range(args.clients)
            ]
            limit = asyncio.Semaphore(50)

            async def open_one(endpoint: str, fmt: str) -> None:
                async with limit:
                    ledger = Ledger(endpoint, fmt)
                    url = f"ws://127.0.0.1:{port}{endpoint}"
                    sockets.append(await client(url, fmt, lags, ledger))
                    ledgers.append(ledger)

            started = time.monotonic()
            await asyncio.gather(*(open_one(e, f) for e, f in plan))
            for _ in range(args.stalled):
                stalled.append(await asyncio.to_thread(stalled_client, port, ENDPOINTS[0]))
            print(
                f"{len(sockets)} clients and {len(stalled)} stalled ones connected in "
                f"{time.monotonic() - started:.1f} s "
                f"({args.decider} decider, {args.workers} worker(s), broker {args.broker})",
                flush=True,
            )

            # Dashboards: each polls /api/migration every second, as dashboard.js does.
            polls = Lags()
            pollers = [
                asyncio.get_running_loop().create_task(dashboard(base, polls))
                for _ in range(args.dashboards)
            ]
            # The reference traffic: the autopilot's sessions, plus a few started now.
            for _ in range(args.sessions):
                await http.post(
                    "/api/training/start", json={"parameters": {"epochs_per_phase": 30}}
                )
            await asyncio.sleep(1.0)  # every worker's broker subscriptions are in place
            producer = asyncio.get_running_loop().create_task(
                model_producer(base, args.models_per_second, posted)
            )
            measure_from = time.time()
            await asyncio.sleep(args.settle)

            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("/ws/training -> live", lambda: flags.stage("/ws/training", Stage.LIVE)),
                ("/ws -> shadow", lambda: flags.stage("/ws", Stage.SHADOW)),
                ("kill switch on", lambda: flags.kill(True)),
                ("kill switch off", lambda: flags.kill(False)),
                ("/ws -> live", lambda: flags.stage("/ws", Stage.LIVE)),
                ("/ws -> new", lambda: flags.stage("/ws", Stage.NEW)),
                ("/ws -> legacy", lambda: flags.stage("/ws", Stage.LEGACY)),
            ]
            for what, change in steps:
                flip = Flip(what, time.time())
                await change()
                if args.decider == "unleash":
                    flip.started = time.time()  # the server has the change from now on
                await wait_rerouted(journal, flip, _workers(journal), args.wait)
                flips.append(flip)
                rest = args.gap - (time.time() - flip.started)
                if rest > 0:
                    await asyncio.sleep(rest)
            measured_until = time.time()
            for task in (*pollers, producer):
                task.cancel()
            await asyncio.gather(*pollers, producer, return_exceptions=True)
            await asyncio.sleep(args.drain)  # what was posted last is delivered
            faults = delivery_faults(ledgers, posted)
    finally:
        for sock in stalled:
            sock.close()
        for ws in sockets:
            ws.reader_task.cancel()  # type: ignore[attr-defined]
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        await flags.cleanup()
        if admin is not None:
            await admin.aclose()
        if args.broker.startswith("redis"):
            await asyncio.to_thread(delete_keys, args.broker, prefix)

    print(
        f"\nexactly-once: {len(posted)} models created during the walk, "
        f"{len(ledgers)} healthy clients, {sum(ledger.events for ledger in ledgers)} events, "
        f"{len(faults)} fault(s)"
    )
    for fault in faults[:20]:
        print(f"  {fault}")
    status = report(args, target, flips, lags, (measure_from, measured_until), journal, work)
    return 1 if faults or not posted else status


def broker_url(url: str, prefix: str) -> str:
    """A Redis URL gets this run's own key prefix (unless it names one)."""
    if not url.startswith("redis") or "prefix=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def delete_keys(url: str, prefix: str) -> None:
    """Leave the shared Redis as it was: this run's keys go."""
    import redis

    client = redis.Redis.from_url(url.split("?", 1)[0])
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def start_backend(
    command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """The uvicorn process, its output in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)


def _workers(journal: Path) -> set[int]:
    return {int(e["pid"]) for e in reroutes(journal)}


def report(
    args: argparse.Namespace,
    target: float,
    flips: list[Flip],
    lags: Lags,
    window: tuple[float, float],
    journal: Path,
    work: Path,
) -> int:
    print(f"\nflag changes ({args.decider} decider, target <= {target:.2f} s):")
    ok = bool(flips)
    pids = sorted(_workers(journal))
    for flip in flips:
        seconds = flip.seconds
        missing = [pid for pid in pids if pid not in flip.workers]
        ok = ok and seconds is not None and not missing and seconds <= target
        per_worker = "  ".join(
            f"[{pid}] {s:6.3f} s ({n} moved)" for pid, (s, n) in sorted(flip.workers.items())
        )
        if missing:
            per_worker += f"  NOT re-routed within {args.wait:.0f} s: {missing}"
        window_lags = lags.between(flip.started, flip.started + 2.0)
        print(f"  {flip.what:<22} flip {per_worker}")
        print(f"  {'':<22} lag in the next 2 s: {quantiles(window_lags)}")
    print(f"\ndelivery lag, whole run: {quantiles(lags.between(*window))}")
    print(f"frames received {lags.frames}, client connections closed {lags.closed}")
    if args.json:
        Path(args.json).write_text(
            orjson.dumps(
                {
                    "decider": args.decider,
                    "clients": args.clients,
                    "workers": args.workers,
                    "target": target,
                    "flips": [
                        {"what": f.what, "seconds": f.seconds, "workers": f.workers} for f in flips
                    ],
                    "lag": quantiles(lags.between(*window)),
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            ).decode()
        )
    if args.keep_log:
        print(f"server log: {work / 'server.log'}, reroutes: {journal}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--decider", choices=("file", "unleash"), default="file")
    parser.add_argument("--refresh", type=int, default=1, help="Unleash refresh interval, s")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--broker", default="memory://", help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--dashboards", type=int, default=0, help="pollers of /api/migration (1/s each)"
    )
    parser.add_argument("--sessions", type=int, default=2, help="sessions started over REST")
    parser.add_argument("--stalled", type=int, default=1, help="raw clients that never read")
    parser.add_argument(
        "--models-per-second", type=float, default=10.0, help="the exactly-once producer"
    )
    parser.add_argument("--drain", type=float, default=1.5, help="wait for the last events, s")
    parser.add_argument("--autopilot", type=float, default=20.0, help="autopilot period, s")
    parser.add_argument("--settle", type=float, default=6.0, help="traffic before the first flip")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between flips")
    parser.add_argument("--wait", type=float, default=20.0, help="longest wait for a flip, s")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--keep-log", action="store_true", help="keep the server's log")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
