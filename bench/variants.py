"""What the benchmark compares: server stacks and variants. Pure data, no I/O.

A *stack* is how the server process is run (uvicorn's event loop, HTTP and
WebSocket implementations, permessage-deflate, frame size limit). A *variant* is
one broadcaster (legacy manager, service, shim at a stage, raw websockets) on one
kind of route, on one stack. ``legacy`` on the ``uvicorn`` stack is the baseline
every ratio is taken against.

The ``uvicorn`` stack pins what ``pip install fastapi uvicorn`` gets with
``uvicorn app:app`` and no flags: the asyncio loop, h11, websockets-sansio,
permessage-deflate accepted, 16 MiB frames. (``uvicorn[standard]`` would switch
loop and HTTP parser to uvloop and httptools by itself; pinning keeps the
baseline the same on every machine.) The ``tuned`` stack is the recommended
deployment of the service, documented in BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BASELINE",
    "DEFAULT_VARIANTS",
    "SMOKE_VARIANTS",
    "STACKS",
    "VARIANTS",
    "Stack",
    "Variant",
]

Kind = Literal["legacy", "service", "shim", "raw"]
RouteKind = Literal["fastapi", "starlette", "middleware", "none"]


@dataclass(frozen=True, slots=True)
class Stack:
    """How the server process runs; ``loop``/``http``/``ws`` are uvicorn's names."""

    name: str
    loop: str
    http: str
    ws: str
    per_message_deflate: bool
    ws_max_size: int
    note: str

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config`` (logging is set by the launcher)."""
        return {
            "loop": self.loop,
            "http": self.http,
            "ws": self.ws,
            "ws_per_message_deflate": self.per_message_deflate,
            "ws_max_size": self.ws_max_size,
        }

    def cli_flags(self) -> str:
        """The same settings as ``uvicorn`` command-line flags, for the report."""
        flags = [f"--loop {self.loop}", f"--http {self.http}", f"--ws {self.ws}"]
        if not self.per_message_deflate:
            flags.append("--ws-per-message-deflate false")
        if self.ws_max_size != 16 * 1024 * 1024:
            flags.append(f"--ws-max-size {self.ws_max_size}")
        return " ".join(flags)


STACKS: dict[str, Stack] = {
    stack.name: stack
    for stack in (
        Stack(
            "uvicorn",
            loop="asyncio",
            http="h11",
            ws="websockets-sansio",
            per_message_deflate=True,
            ws_max_size=16 * 1024 * 1024,
            note="uvicorn defaults (plain `pip install uvicorn`)",
        ),
        Stack(
            "uvicorn-ws",
            loop="asyncio",
            http="h11",
            ws="websockets",
            per_message_deflate=True,
            ws_max_size=16 * 1024 * 1024,
            note="uvicorn defaults but --ws websockets (the older websockets implementation)",
        ),
        Stack(
            "tuned",
            # uvloop measured 5-9 % more CPU per delivered message and 0.4 KiB more per
            # idle connection than asyncio for this workload (BENCHMARKS.md), so the
            # recommendation keeps asyncio's loop.
            loop="asyncio",
            http="httptools",
            ws="websockets-sansio",
            per_message_deflate=False,
            ws_max_size=64 * 1024,
            note="recommended: httptools, no permessage-deflate, 64 KiB frames",
        ),
        Stack(
            "websockets",
            loop="asyncio",
            http="-",
            ws="-",
            per_message_deflate=True,
            ws_max_size=1024 * 1024,
            note="websockets.asyncio.server.serve defaults (deflate accepted, 1 MiB frames)",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Variant:
    """One server under test: ``kind`` broadcasts, on a ``route`` kind, on ``stack``."""

    name: str
    kind: Kind
    route: RouteKind
    stack: str
    stage: str | None = None
    note: str = ""
    #: For the service on a FastAPI route: ``serve`` (``service.asgi.serve``) or
    #: ``guide`` (the migration guide's endpoint: ``connect``, ``subscribe`` and a
    #: ``receive_text()`` loop calling ``handle_message``).
    shape: Literal["serve", "guide"] = "serve"


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("legacy", "legacy", "fastapi", "uvicorn", note="baseline: WebSocketManager"),
        Variant("legacy-ws", "legacy", "fastapi", "uvicorn-ws", note="legacy on --ws websockets"),
        Variant("legacy-tuned", "legacy", "fastapi", "tuned", note="legacy on the tuned stack"),
        Variant("service", "service", "fastapi", "uvicorn", note="WebSocketService, FastAPI route"),
        Variant(
            "service-guide",
            "service",
            "fastapi",
            "uvicorn",
            note="the migration guide's endpoint, app with DirectSendMiddleware",
            shape="guide",
        ),
        Variant(
            "service-lean",
            "service",
            "middleware",
            "uvicorn",
            note="service, ServiceEndpoint middleware ahead of FastAPI",
        ),
        Variant(
            "service-tuned",
            "service",
            "middleware",
            "tuned",
            note="service, ServiceEndpoint, tuned stack (recommended)",
        ),
        Variant("shim-legacy", "shim", "fastapi", "uvicorn", stage="legacy"),
        Variant("shim-shadow", "shim", "fastapi", "uvicorn", stage="shadow"),
        Variant("shim-live", "shim", "fastapi", "uvicorn", stage="live"),
        Variant("shim-new", "shim", "fastapi", "uvicorn", stage="new"),
        Variant("raw", "raw", "none", "websockets", note="websockets.broadcast reference"),
    )
}

#: Every ratio is taken against this variant, from the same run and settings.
BASELINE = "legacy"

DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
SMOKE_VARIANTS: tuple[str, ...] = ("legacy", "service")
