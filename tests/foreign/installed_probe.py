"""Run by tests/foreign/test_installed.py with a fresh virtualenv's Python.

The job-queue team's project (its ``jobqueue`` package, copied next to this
file) uses the toolkit as installed from the wheel: flags from the default
toggles file in the working directory (set with the installed ``ws-migration``
command), its own manager wrapped by ``CompatWebSocketManager``, its own rules.
Prints one JSON line: where each package was imported from, and what an old and
an envelope client received for one broadcast.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import uvicorn
from jobqueue.app import JobSocketManager, create_app
from jobqueue.rules import PROGRESS, job_rules
from websockets.asyncio.client import connect

import flags
import service
import shim
from flags import FlagSettings, UnleashStageDecider
from shim import CompatWebSocketManager


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def main() -> dict[str, Any]:
    settings = FlagSettings()
    decider = UnleashStageDecider(settings=settings)
    manager = CompatWebSocketManager(legacy=JobSocketManager(), rules=job_rules(), decider=decider)
    await decider.start()
    manager.reroute()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    base = f"127.0.0.1:{port}/jobs/ws?session=S1"
    try:
        async with (
            connect(f"ws://{base}") as old,
            connect(f"ws://{base}&format=envelope") as new,
        ):
            hello = json.loads(await asyncio.wait_for(new.recv(), 5))
            for _ in range(200):
                if len(list(manager.routes())) == 2:
                    break
                await asyncio.sleep(0.01)
            stages = sorted({route.stage.value for route in manager.routes()})
            async with httpx.AsyncClient() as http:
                await http.post(f"http://127.0.0.1:{port}/emit/broadcast", json=PROGRESS)
            old_frame = await asyncio.wait_for(old.recv(), 5)
            new_frame = json.loads(await asyncio.wait_for(new.recv(), 5))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await decider.stop()
    return {
        "modules": {m.__name__: m.__file__ for m in (shim, service, flags)},
        "toggles_file": str(settings.toggles_file),
        "stages": stages,
        "hello": hello["type"],
        "old": old_frame,
        "new": new_frame,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
