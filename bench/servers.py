"""The server side of every variant: one ASGI app per variant, and the control endpoint.

``build_app(variant)`` returns the app ``bench.serve`` runs with uvicorn; the
raw-websockets reference lives in :mod:`bench.raw` and shares :class:`Control`.
Each app serves its subscribers at :data:`~bench.protocol.BENCH_PATH` exactly the
way a backend would (the legacy endpoint of the migration guide, ``serve()`` for
the service, the unchanged legacy endpoint over ``CompatWebSocketManager`` for the
shim), and the control channel at :data:`~bench.protocol.CONTROL_PATH`.

A burst broadcasts through the variant's own path:

- legacy: ``await manager.broadcast(dict)``
- service: ``await service.broadcast(WebSocketMessage(...), topic="training")``
- shim: ``await manager.broadcast(dict)`` with ``FixedStages`` at the stage and a
  ``Differ`` sampling 100 % of connections
- raw: ``websockets.broadcast(connections, bytes)`` (in :mod:`bench.raw`)
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .protocol import (
    BENCH_PATH,
    CONTROL_PATH,
    TOPIC,
    BurstState,
    legacy_payload,
    pad_for,
    process_stats,
    service_data,
)
from .variants import Variant

__all__ = ["Control", "Stallable", "build_app", "is_stall_request"]

#: ``broadcast_one(burst_id, n, pad)``: broadcast message ``n`` of a burst.
BroadcastOne = Callable[[int, int, str], Awaitable[None]]


class Stallable(Protocol):
    """A subscriber socket the ``fill`` op writes filler to directly."""

    def send_text(self, data: str) -> Awaitable[None]: ...


def is_stall_request(query_string: bytes) -> bool:
    """True for a subscriber that will stop reading (it connected with ``?stall=1``)."""
    return b"stall=1" in query_string


class Control:
    """The control channel's handler, shared by every variant (see :mod:`bench.protocol`).

    ``broadcast_one`` sends one benchmark message through the variant's path;
    ``count`` returns how many subscribers the variant has registered.
    """

    def __init__(
        self,
        broadcast_one: BroadcastOne,
        count: Callable[[], int],
        *,
        profile: str | None = None,
    ) -> None:
        self.broadcast_one = broadcast_one
        self.count = count
        # Weak: a socket leaves the set when its connection is gone, so endpoints need
        # no frame of their own to untrack it (that frame would be measured too).
        self.stallable: weakref.WeakSet[Stallable] = weakref.WeakSet()
        self.burst = BurstState()
        self._task: asyncio.Task[None] | None = None
        self._snapshot: Any = None
        # With ``profile`` (a file name), cProfile runs while a burst is broadcast and
        # only then, so the profile shows where fan-out time goes, not connection
        # setup; the accumulated stats are written after every burst (uvicorn ends
        # the process by re-raising SIGTERM, so there is no "at exit" to rely on).
        self.profile = profile
        self.profiler = cProfile.Profile() if profile else None

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request; an unknown op gets ``{"error": ...}``."""
        op = request.get("op")
        if op == "stats":
            return {**process_stats(), "connections": self.count(), "burst": self.burst.to_dict()}
        if op == "burst":
            if self._task is not None and not self._task.done():
                return {"error": "a burst is still running"}
            self._task = asyncio.get_running_loop().create_task(
                self._run_burst(int(request["id"]), int(request["count"]), int(request["size"]))
            )
            return {"started": time.time()}
        if op == "fill":
            return await self._fill(
                int(request["chunk"]), int(request["max_chunks"]), float(request["wait"])
            )
        if op == "gc":
            return {"collected": gc.collect()}
        if op == "heap":
            return self._heap(int(request.get("top", 25)), str(request.get("group", "lineno")))
        return {"error": f"unknown op {op!r}"}

    async def _run_burst(self, burst_id: int, count: int, size: int) -> None:
        pad = pad_for(size)
        state = self.burst
        state.begin(burst_id, count)
        if self.profiler is not None:
            self.profiler.enable()
        try:
            for n in range(count):
                await self.broadcast_one(burst_id, n, pad)
                state.sent += 1
        except Exception as exc:  # reported through stats; the server keeps running
            state.error = repr(exc)
        finally:
            if self.profiler is not None and self.profile is not None:
                self.profiler.disable()
                self.profiler.dump_stats(self.profile)
            state.finished = time.time()

    def _heap(self, top: int, group: str) -> dict[str, Any]:
        """Python allocations grown since the previous ``heap`` call (needs tracemalloc).

        Start the server with ``PYTHONTRACEMALLOC=1`` (or more frames); the first
        call only takes the reference snapshot.
        """
        import tracemalloc

        if not tracemalloc.is_tracing():
            return {"error": "start the server with PYTHONTRACEMALLOC=1"}
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        previous, self._snapshot = self._snapshot, snapshot
        if previous is None:
            return {"top": []}
        diff = snapshot.compare_to(previous, group)
        return {
            "total_growth": sum(d.size_diff for d in diff),
            "top": [
                {"where": str(d.traceback), "bytes": d.size_diff, "count": d.count_diff}
                for d in diff[:top]
            ],
        }

    async def _fill(self, chunk: int, max_chunks: int, wait: float) -> dict[str, Any]:
        import base64
        import os

        # Random base64, four different chunks in turn: permessage-deflate can
        # neither shrink one chunk nor find the previous one in its window (up to
        # 32 KiB), so the filler takes as many bytes on the wire as it says.
        fillers = [base64.b64encode(os.urandom(chunk * 3 // 4)).decode() for _ in range(4)]
        results = await asyncio.gather(
            *(_fill_one(sock, fillers, max_chunks, wait) for sock in list(self.stallable))
        )
        return {
            "sockets": len(results),
            "paused": sum(1 for _, paused in results if paused),
            "bytes": sum(sent for sent, _ in results) * len(fillers[0]),
        }


async def _fill_one(
    sock: Stallable, fillers: Sequence[str], max_chunks: int, wait: float
) -> tuple[int, bool]:
    """Send filler until a send blocks for ``wait`` seconds; return (sent, blocked)."""
    sent = 0
    for i in range(max_chunks):
        try:
            await asyncio.wait_for(sock.send_text(fillers[i % len(fillers)]), wait)
        except TimeoutError:
            return sent, True
        except Exception:
            return sent, False
        sent += 1
    return sent, False


def control_route(control: Control) -> WebSocketRoute:
    """The control channel as a plain Starlette route (never through the code under test)."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                request = orjson.loads(await websocket.receive_text())
                reply = await control.handle(request)
                await websocket.send_text(orjson.dumps(reply).decode())
        except WebSocketDisconnect:
            pass

    return WebSocketRoute(CONTROL_PATH, endpoint)


# -- the variants ------------------------------------------------------------------------

Endpoint = Callable[[WebSocket], Awaitable[None]]
Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def _old_approach_endpoint(manager: Any, control_box: list[Control]) -> Endpoint:
    """The migration guide's "Old approach" endpoint, plus the stall bookkeeping."""

    async def endpoint(websocket: WebSocket) -> None:
        stall = _track_stall(control_box[0], websocket)
        await manager.connect(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)
        finally:
            _untrack(control_box[0], stall)

    return endpoint


def _legacy(control_box: list[Control]) -> tuple[Endpoint, BroadcastOne, Callable[[], int], None]:
    from legacy.manager import WebSocketManager

    manager = WebSocketManager()
    endpoint = _old_approach_endpoint(manager, control_box)

    async def broadcast_one(burst_id: int, n: int, pad: str) -> None:
        await manager.broadcast(legacy_payload(burst_id, n, pad))

    return endpoint, broadcast_one, lambda: len(manager.active_connections), None


def _service(
    control_box: list[Control], service_box: list[Any], shape: str
) -> tuple[Endpoint, BroadcastOne, Callable[[], int], Any]:
    from service import MessageType, WebSocketMessage, WebSocketService
    from service.asgi import lifespan, serve

    service = WebSocketService()
    service_box.append(service)

    async def served(websocket: WebSocket) -> None:
        stall = _track_stall(control_box[0], websocket)
        try:
            await serve(service, websocket, topics=[TOPIC], metadata={"endpoint": "main"})
        finally:
            _untrack(control_box[0], stall)

    async def guide(websocket: WebSocket) -> None:
        # The migration guide's "New approach" endpoint, as written there.
        stall = _track_stall(control_box[0], websocket)
        connection_id = await service.connect(websocket, {"endpoint": "main"})
        await service.subscribe(connection_id, TOPIC)
        try:
            while True:
                data = await websocket.receive_text()
                await service.handle_message(connection_id, data)
        except WebSocketDisconnect:
            await service.disconnect(connection_id)
        finally:
            _untrack(control_box[0], stall)

    endpoint = guide if shape == "guide" else served

    async def broadcast_one(burst_id: int, n: int, pad: str) -> None:
        message = WebSocketMessage(
            type=MessageType.TRAINING_PROGRESS, data=service_data(burst_id, n, pad)
        )
        await service.broadcast(message, topic=TOPIC)

    return endpoint, broadcast_one, lambda: len(service.connections), lifespan(service)


def _service_endpoint(service: Any, control_box: list[Control]) -> Any:
    """``ServiceEndpoint`` at the benchmark path, telling the control about stallable clients."""
    from service.asgi import ServiceEndpoint

    class BenchEndpoint(ServiceEndpoint):
        def handle(self, websocket: WebSocket) -> Awaitable[None]:
            _track_stall(control_box[0], websocket)  # untracked when the socket is freed
            return super().handle(websocket)

    return BenchEndpoint


def _shim(
    control_box: list[Control], stage_name: str
) -> tuple[Endpoint, BroadcastOne, Callable[[], int], Any]:
    from service import WebSocketService
    from shim.diff import Differ
    from shim.manager import CompatWebSocketManager
    from shim.stages import FixedStages, Stage

    service = WebSocketService()
    manager = CompatWebSocketManager(
        service=service,
        decider=FixedStages(default=Stage(stage_name), sample_rate=1.0),
        differ=Differ(),
        endpoint_topics={BENCH_PATH: (TOPIC,)},
    )

    endpoint = _old_approach_endpoint(manager, control_box)  # only the manager differs

    async def broadcast_one(burst_id: int, n: int, pad: str) -> None:
        await manager.broadcast(legacy_payload(burst_id, n, pad))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await manager.stop()
            await service.stop()

    return endpoint, broadcast_one, lambda: len(manager.active_connections), lifespan


class _SocketWrites:
    """The socket's own ``send_text``, taken before any manager wraps it.

    The migration shim replaces a socket's send methods with its writer's queue
    (they never block); the fill must reach the socket itself, as for every other
    variant, or the stalled clients' buffers never fill.
    """

    __slots__ = ("__weakref__", "send_text")

    def __init__(self, websocket: WebSocket) -> None:
        self.send_text = partial(WebSocket.send_text, websocket)


def _track_stall(control: Control, websocket: WebSocket) -> _SocketWrites | None:
    if is_stall_request(websocket.scope.get("query_string", b"")):
        writes = _SocketWrites(websocket)
        control.stallable.add(writes)
        return writes
    return None


def _untrack(control: Control, writes: _SocketWrites | None) -> None:
    if writes is not None:
        control.stallable.discard(writes)


def build_app(variant: Variant, *, profile: str | None = None) -> tuple[Any, Control]:
    """The ASGI app of ``variant`` and its control handler (not for ``raw``).

    With ``profile``, the control handler profiles every burst (see :class:`Control`).
    """
    box: list[Control] = []
    service_box: list[Any] = []
    lifespan: Any
    if variant.kind == "legacy":
        endpoint, broadcast_one, count, lifespan = _legacy(box)
    elif variant.kind == "service":
        endpoint, broadcast_one, count, lifespan = _service(box, service_box, variant.shape)
    elif variant.kind == "shim":
        assert variant.stage is not None
        endpoint, broadcast_one, count, lifespan = _shim(box, variant.stage)
    else:
        raise ValueError(f"{variant.name} is not an ASGI variant")
    control = Control(broadcast_one, count, profile=profile)
    box.append(control)

    app: Any
    if variant.route == "middleware":
        from fastapi import FastAPI

        app = FastAPI(lifespan=lifespan)
        app.router.routes.append(control_route(control))
        # Outermost, so a subscriber's connection keeps no frame of FastAPI's own
        # middleware stack either (``app.add_middleware`` would put it inside).
        endpoint_class = _service_endpoint(service_box[0], box)
        wrapped = endpoint_class(
            app,
            service=service_box[0],
            path=BENCH_PATH,
            topics=[TOPIC],
            metadata={"endpoint": "main"},
        )
        return wrapped, control
    if variant.route == "fastapi":
        from fastapi import FastAPI

        app = FastAPI(lifespan=lifespan) if lifespan is not None else FastAPI()

        # What ``@app.websocket(BENCH_PATH)`` registers: a FastAPI route whose
        # ``websocket: WebSocket`` parameter FastAPI injects.
        app.add_api_websocket_route(BENCH_PATH, endpoint)
        app.router.routes.append(control_route(control))
    else:
        from starlette.applications import Starlette

        routes = [WebSocketRoute(BENCH_PATH, endpoint), control_route(control)]
        app = Starlette(routes=routes, lifespan=lifespan)
    if variant.kind != "legacy":  # the service's recommended app setup, see service.directsend
        from service.directsend import DirectSendMiddleware

        app.add_middleware(DirectSendMiddleware)
    return app, control
