"""Helpers for the reference backend tests: the backend behind uvicorn, clients, the CLI.

:func:`serve_reference` builds ``reference.app.create_app`` with test settings
(autopilot off, fast epochs, no heartbeats) and serves it with real uvicorn on
127.0.0.1. :class:`Client` is one real ``websockets`` client whose frames a
reader task collects, so a test can check that the *same* socket keeps
receiving across stage flips. :func:`flags_cli` runs ``scripts/flags.py`` as a
subprocess against a toggles file, as an operator would.

Waits are bounded by multiples of :data:`tests.support.UNIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Subprotocol

from flags import (
    DEFAULT_TOGGLES_FILE,
    FlagSettings,
    read_document,
    set_endpoint_stage,
    set_kill_switch,
    write_document,
)
from reference.app import create_app
from reference.config import Settings
from shim.manager import CompatWebSocketManager
from shim.stages import Stage
from tests.support import UNIT, connect, running_server

__all__ = [
    "ENDPOINTS",
    "OPS_TOKEN",
    "ROOT",
    "Backend",
    "Client",
    "all_receive",
    "copy_toggles",
    "eventually",
    "fast_settings",
    "flags_cli",
    "serve_reference",
    "training_finished",
]

ROOT = Path(__file__).resolve().parents[2]
FLAGS_SCRIPT = ROOT / "scripts" / "flags.py"
ENDPOINTS = ("/ws", "/ws/training")
ENVELOPE = [Subprotocol("envelope.v1")]
#: The operator token of the served backend; :attr:`Backend.http` sends it.
OPS_TOKEN = "test-ops-token-not-a-secret"


def fast_settings(**overrides: Any) -> Settings:
    """The backend's settings for tests: no autopilot, 50 ms epochs, no heartbeats.

    The operator endpoints take :data:`OPS_TOKEN`.
    """
    values: dict[str, Any] = {
        "ops_token": OPS_TOKEN,
        "autopilot_seconds": 0,
        "epoch_seconds": 0.05,
        "heartbeat_interval": None,
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


def copy_toggles(folder: Path) -> Path:
    """A copy of the shipped ``flags/toggles.json`` in ``folder``, every endpoint legacy.

    The shipped file is normally all legacy; the copy is reset to that explicitly
    so that someone trying a stage on the working tree's file changes no test.
    """
    path = folder / "toggles.json"
    shutil.copyfile(DEFAULT_TOGGLES_FILE, path)
    doc = set_kill_switch(read_document(path), False)
    for endpoint in ENDPOINTS:
        doc = set_endpoint_stage(doc, endpoint, Stage.LEGACY)
    write_document(path, doc)
    return path


@dataclass
class Client:
    """A real websockets client on one endpoint, old (plain) or new (``envelope.v1``).

    A reader task appends every frame, parsed, to :attr:`frames` until the socket
    closes; :attr:`socket` never changes, so frames seen after a flip came over
    the connection opened before it.
    """

    endpoint: str
    fmt: str  # "old" or "new"
    socket: ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base_url: str, endpoint: str, fmt: str) -> Client:
        """Connect; a new-format client returns after its ``connection_established``."""
        subprotocols = ENVELOPE if fmt == "new" else None
        socket = await connect(f"{base_url}{endpoint}", subprotocols=subprotocols)
        client = cls(endpoint, fmt, socket)
        client.reader = asyncio.get_running_loop().create_task(client._read())
        if fmt == "new":
            await client.wait_for(lambda f: f.get("type") == "connection_established")
        return client

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.socket:
                self.frames.append(orjson.loads(raw))

    @property
    def is_open(self) -> bool:
        return self.socket.state is State.OPEN

    @property
    def connection_ids(self) -> list[str]:
        """The ids of every ``connection_established`` received (new format: one)."""
        return [
            str(frame["data"]["connection_id"])
            for frame in self.frames
            if frame.get("type") == "connection_established"
        ]

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        after: int = 0,
        timeout: float = 3.0,
    ) -> dict[str, Any]:
        """The first frame from index ``after`` on that satisfies ``predicate``."""
        async with asyncio.timeout(timeout * UNIT):
            while True:
                for frame in self.frames[after:]:
                    if predicate(frame):
                        return frame
                if self.reader is not None and self.reader.done():
                    raise AssertionError(f"{self!r} closed while waiting")
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.socket.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 2 * UNIT)

    def __repr__(self) -> str:
        return f"<Client {self.fmt} {self.endpoint} frames={len(self.frames)}>"


@dataclass
class Backend:
    """The reference app, served: its ws:// base URL and an httpx client on it.

    :attr:`http` sends ``Authorization: Bearer`` :data:`OPS_TOKEN` on every request.
    """

    app: FastAPI
    ws_url: str
    http: httpx.AsyncClient
    flag_settings: FlagSettings
    clients: list[Client] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return "http" + self.ws_url.removeprefix("ws")

    @property
    def manager(self) -> CompatWebSocketManager:
        manager: CompatWebSocketManager = self.app.state.manager
        return manager

    async def client(self, endpoint: str, fmt: str) -> Client:
        """Open a client that is closed with the backend."""
        client = await Client.open(self.ws_url, endpoint, fmt)
        self.clients.append(client)
        return client

    async def clients_everywhere(self) -> dict[tuple[str, str], Client]:
        """One old and one new client on each endpoint, keyed ``(fmt, endpoint)``."""
        found = {}
        for endpoint in ENDPOINTS:
            for fmt in ("old", "new"):
                found[fmt, endpoint] = await self.client(endpoint, fmt)
        return found

    def stages(self, endpoint: str | None = None) -> set[Stage]:
        """The stages the shim's live routes are in (of one endpoint, or all)."""
        return {
            route.stage
            for route in self.manager.routes()
            if endpoint is None or route.endpoint == endpoint
        }

    def connection_ids(self) -> set[str]:
        return {route.connection_id for route in self.manager.routes()}

    async def migration(self) -> dict[str, Any]:
        answer = await self.http.get("/ops/migration")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state

    async def train(self, epochs_per_phase: int = 1) -> str:
        """Start a training session over REST; return its id."""
        answer = await self.http.post(
            "/api/training/start", json={"parameters": {"epochs_per_phase": epochs_per_phase}}
        )
        assert answer.status_code == 200, answer.text
        session_id: str = answer.json()["session_id"]
        return session_id

    async def create_model(self, name: str) -> str:
        answer = await self.http.post("/api/models", json={"name": name})
        assert answer.status_code == 200, answer.text
        model_id: str = answer.json()["model_id"]
        return model_id

    async def decides(self, stage_of: dict[str, Stage], timeout: float = 2.0) -> None:
        """Wait until the decider routes a new connection of each endpoint to its stage."""
        decider = self.app.state.decider
        await eventually(
            lambda: all(decider.decide(e, "probe", {}).stage is s for e, s in stage_of.items()),
            timeout=timeout,
        )

    async def rerouted(self, stage_of: dict[str, Stage], timeout: float = 2.0) -> float:
        """Wait until every live route of each endpoint is in its stage; return seconds.

        An endpoint without connections is trivially there.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(
            lambda: all(self.stages(e) <= {s} for e, s in stage_of.items()), timeout=timeout
        )
        return loop.time() - started


async def eventually(condition: Callable[[], bool], *, timeout: float = 2.0) -> None:
    """Poll ``condition`` every 5 ms until it holds, within ``timeout`` units."""
    async with asyncio.timeout(timeout * UNIT):
        while not condition():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serve_reference(
    flag_settings: FlagSettings, settings: Settings | None = None
) -> AsyncIterator[Backend]:
    """The reference app behind uvicorn on 127.0.0.1; clients are closed before it stops."""
    app = create_app(settings or fast_settings(), flag_settings)
    async with (
        running_server(app) as url,
        httpx.AsyncClient(
            base_url="http" + url.removeprefix("ws"),
            timeout=10,
            headers={"authorization": f"Bearer {OPS_TOKEN}"},
        ) as http,
    ):
        backend = Backend(app, url, http, flag_settings)
        try:
            yield backend
        finally:
            await asyncio.gather(*(c.close() for c in backend.clients))


def training_finished(session_id: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: the frame announces the end of ``session_id`` (old or new format)."""

    def done(frame: dict[str, Any]) -> bool:
        data = frame.get("data") if isinstance(frame.get("data"), dict) else frame
        assert isinstance(data, dict)
        return frame.get("type") in ("training_complete", "training_completed") and (
            data.get("session_id") == session_id
        )

    return done


async def all_receive(clients: Iterable[Client], session_id: str, marks: list[int]) -> None:
    """Every client receives the end of ``session_id`` after its mark."""
    await asyncio.gather(
        *(
            c.wait_for(training_finished(session_id), after=mark, timeout=5)
            for c, mark in zip(clients, marks, strict=True)
        )
    )


async def flags_cli(toggles: Path, *args: str) -> str:
    """Run ``scripts/flags.py ARGS`` with ``FLAGS_FILE=toggles``; return its stdout.

    Runs as a real subprocess without blocking the event loop (the backend under
    test is served from this loop). Fails the test when the command fails.
    """
    env = {**os.environ, "FLAGS_FILE": str(toggles)}
    env.pop("UNLEASH_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FLAGS_SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30 * UNIT)
    assert process.returncode == 0, f"flags {' '.join(args)}: {err.decode()}"
    return out.decode()
