"""Routes and ports: how one client socket is attached to both sides at once.

Every connection the shim accepts is registered with the legacy manager *and* the
new service. The legacy manager holds the client's real socket (so the app's own
manager code sees the object it always saw: ``query_params``, identity, equality),
whose ``send_json``/``send_text``/``accept`` the shim has replaced by a
:class:`LegacyPort`'s; the service holds a :class:`ServicePort`. A port either
delivers to the real socket, records into the differ, or does nothing, according
to the connection's current stage; under ``shadow`` and ``live`` the delivering
side records too, so the differ sees both sides. A stage change only flips those modes, so a
rollback re-routes every live connection synchronously, without reconnecting.

========  ==================  ==================
stage     legacy port         service port
========  ==================  ==================
legacy    deliver             off
shadow    deliver             record
live      record              deliver
new       off                 deliver
========  ==================  ==================
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, NamedTuple, Protocol

from .diff import Side
from .stages import RoutingDecision, Stage
from .wire import WireFormat

__all__ = [
    "IN_DUAL_WRITE",
    "ClientGone",
    "ClientSocket",
    "DeliveryCounters",
    "LegacyPort",
    "Mode",
    "RealSocket",
    "Route",
    "SentText",
    "ServicePort",
    "modes_for",
    "starlette_json_text",
]


#: Set while the shim's own dual-write runs the legacy manager's broadcast: the
#: new side delivers that event itself (through the service's fan-out), so the
#: legacy sends it causes only deliver or record for the legacy side. Every other
#: send of the app's manager (its own methods: ``broadcast_to_session``, a
#: personal message) is routed to the new side per connection as well.
IN_DUAL_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("in_dual_write", default=False)


class SentText(NamedTuple):
    """A frame the app sent with ``send_text`` (JSON or not), as the differ sees it."""

    text: str


class Mode(Enum):
    DELIVER = "deliver"
    RECORD = "record"
    OFF = "off"


_MODES: dict[Stage, tuple[Mode, Mode]] = {
    Stage.LEGACY: (Mode.DELIVER, Mode.OFF),
    Stage.SHADOW: (Mode.DELIVER, Mode.RECORD),
    Stage.LIVE: (Mode.RECORD, Mode.DELIVER),
    Stage.NEW: (Mode.OFF, Mode.DELIVER),
}


def modes_for(stage: Stage, *, sampled: bool) -> tuple[Mode, Mode]:
    """Return ``(legacy port mode, service port mode)``; unsampled connections record nothing."""
    legacy, new = _MODES[stage]
    if not sampled:
        legacy = Mode.OFF if legacy is Mode.RECORD else legacy
        new = Mode.OFF if new is Mode.RECORD else new
    return legacy, new


class DeliveryCounters:
    """Frames that reached client sockets, per delivering path (shared by all routes)."""

    __slots__ = ("legacy_failed", "legacy_sent", "new_failed", "new_sent")

    def __init__(self) -> None:
        self.legacy_sent = 0
        self.legacy_failed = 0
        self.new_sent = 0
        self.new_failed = 0

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "legacy": {"sent": self.legacy_sent, "failed": self.legacy_failed},
            "new": {"sent": self.new_sent, "failed": self.new_failed},
        }


class ClientSocket(Protocol):
    """The client's real socket (Starlette's WebSocket)."""

    async def send_text(self, data: str) -> None: ...

    async def send_json(self, data: Any, mode: str = "text") -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class RealSocket:
    """The client socket's own sends, captured before the shim replaces them.

    The shim (and the service, through the route's service port) write through
    these; the app's code, calling the same names on the socket, goes through
    the route's :class:`LegacyPort` instead.
    """

    __slots__ = ("close", "scope", "send_bytes", "send_json", "send_text")

    def __init__(self, websocket: Any) -> None:
        self.send_text: Callable[[str], Awaitable[None]] = websocket.send_text
        self.send_json: Callable[..., Awaitable[None]] = websocket.send_json
        self.send_bytes: Callable[[bytes], Awaitable[None]] | None = getattr(
            websocket, "send_bytes", None
        )
        self.close: Callable[..., Awaitable[None]] = websocket.close
        self.scope: Any = getattr(websocket, "scope", None)


def starlette_json_text(data: Any) -> str:
    """Exactly the text Starlette's ``send_json`` sends for ``data``."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


Recorder = Callable[["Route", Side, object], None]


def _no_topic(payload: object) -> str:
    return ""


LegacyRenderer = Callable[[Any], str | None]
DirectSender = Callable[["Route", object], Awaitable[None]]


class Route:
    """One client connection as the shim sees it: socket, endpoint, format, stage, ports."""

    __slots__ = (
        "comparing",
        "connection_id",
        "counters",
        "decision",
        "encode_legacy",
        "endpoint",
        "feed",
        "feed_bytes",
        "forbidden",
        "format",
        "legacy_mode",
        "legacy_port",
        "new_mode",
        "record",
        "render_envelope",
        "replay_floors",
        "sampled",
        "send_direct",
        "service_port",
        "socket",
        "stickiness_key",
        "topic_of",
        "websocket",
        "write_now",
    )

    def __init__(
        self,
        socket: ClientSocket,
        *,
        connection_id: str,
        endpoint: str,
        wire_format: WireFormat,
        stickiness_key: str,
        record: Recorder,
        render_envelope: LegacyRenderer,
        counters: DeliveryCounters,
    ) -> None:
        #: The client's real socket object (what the app's code holds) ...
        self.websocket: Any = socket
        #: ... and its own sends, never routed (see :class:`RealSocket`).
        self.socket: ClientSocket | RealSocket = socket
        self.connection_id = connection_id
        self.endpoint = endpoint
        self.format = wire_format
        self.stickiness_key = stickiness_key
        self.record = record
        self.counters = counters
        self.render_envelope = render_envelope
        self.decision = RoutingDecision(Stage.LEGACY)
        self.sampled = False
        self.comparing = False
        self.legacy_mode = Mode.DELIVER
        self.new_mode = Mode.OFF
        self.legacy_port = LegacyPort(self)
        self.service_port = ServicePort(self)
        #: Old payloads as text, encoded once per broadcast (set by the shim).
        self.encode_legacy: Callable[[Any], str] = starlette_json_text
        #: Synchronous pre-framed write, when the server allows it (see service.directsend).
        self.write_now: Callable[[str], bool] | None = None
        #: Per topic, the (epoch, seq) up to which the new side is replaying a resume.
        self.replay_floors: dict[str, tuple[Any, int]] | None = None
        #: The new side's delivery of a payload the app sent to this socket alone.
        self.send_direct: DirectSender | None = None
        #: The one writer's entry for frames not from the service (set on connect):
        #: queues a text, False once the connection is closed.
        self.feed: Callable[[str], bool] | None = None
        #: ... and for binary frames, in order with the texts.
        self.feed_bytes: Callable[[bytes], bool] | None = None
        #: Topics this client may not read (``authorize``), and the translated
        #: topic of a payload, to keep those from it on the legacy side too.
        self.forbidden: frozenset[str] = frozenset()
        self.topic_of: Callable[[object], str] = _no_topic

    @property
    def stage(self) -> Stage:
        return self.decision.stage

    def feed_legacy(self, text: str | None) -> None:
        """Queue a legacy-side frame on the one writer; ClientGone once it is closed."""
        if text is None:
            return
        feed = self.feed
        if feed is None or not feed(text):
            self.counters.legacy_failed += 1
            raise ClientGone("the client's connection is closed")
        self.counters.legacy_sent += 1

    def feed_legacy_bytes(self, data: bytes) -> None:
        """Queue a binary frame of the app's on the one writer; ClientGone once closed."""
        feed = self.feed_bytes
        if feed is None or not feed(data):
            self.counters.legacy_failed += 1
            raise ClientGone("the client's connection is closed")
        self.counters.legacy_sent += 1

    def apply(self, decision: RoutingDecision, *, sampled: bool) -> bool:
        """Switch to ``decision``; return True when the stage or sampling changed."""
        changed = decision.stage is not self.decision.stage or sampled != self.sampled
        self.decision = decision
        self.sampled = sampled
        self.comparing = decision.stage.compares and sampled
        self.legacy_mode, self.new_mode = modes_for(decision.stage, sampled=sampled)
        return changed


class LegacyPort:
    """The sends of the app's code on a route's socket, routed by the route's stage.

    A delivered frame is queued on the route's one writer (:meth:`Route.feed`):
    the app's manager never awaits the client's socket, so one client that stops
    reading cannot hold up the app's loop over its sockets, and a full buffer
    closes that client (1013) as the service would. A frame whose translated
    topic the client may not read (``authorize``) reaches it from neither side.
    """

    __slots__ = ("route",)

    def __init__(self, route: Route) -> None:
        self.route = route

    def install(self, websocket: Any) -> None:
        """Replace the socket's ``accept``/``send_json``/``send_text`` by this port's."""
        websocket.accept = self.accept
        websocket.send_json = self.send_json
        websocket.send_text = self.send_text
        if hasattr(websocket, "send_bytes"):
            websocket.send_bytes = self.send_bytes

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        """The shim accepted the real socket already."""

    async def send_json(self, data: Any, mode: str = "text") -> None:
        route = self.route
        if route.forbidden and route.topic_of(data) in route.forbidden:
            return
        if mode != "text" and route.format is WireFormat.LEGACY:
            # An old client gets the app's binary frame as is, at every stage
            # (an envelope client gets the payload translated, as for text).
            route.feed_legacy_bytes(route.encode_legacy(data).encode())
            return
        direct = route.send_direct
        if direct is not None and route.new_mode is not Mode.OFF and not IN_DUAL_WRITE.get():
            await direct(route, data)
        if route.legacy_mode is Mode.DELIVER:
            if route.format is WireFormat.LEGACY:
                # What Starlette's send_json sends, encoded once per broadcast.
                route.feed_legacy(route.encode_legacy(data))
            else:
                route.feed_legacy(route.render_envelope(data))
            if route.comparing:
                route.record(route, Side.LEGACY, data)
        elif route.legacy_mode is Mode.RECORD:
            route.record(route, Side.LEGACY, data)

    async def send_text(self, data: str) -> None:
        route = self.route
        sent = SentText(data)
        if route.forbidden and route.topic_of(sent) in route.forbidden:
            return
        direct = route.send_direct
        if direct is not None and route.new_mode is not Mode.OFF and not IN_DUAL_WRITE.get():
            await direct(route, sent)
        if route.legacy_mode is Mode.DELIVER:
            if route.format is WireFormat.LEGACY:
                route.feed_legacy(data)
            else:
                route.feed_legacy(route.render_envelope(sent))
            if route.comparing:
                route.record(route, Side.LEGACY, sent)
        elif route.legacy_mode is Mode.RECORD:
            route.record(route, Side.LEGACY, sent)

    async def send_bytes(self, data: bytes) -> None:
        """A binary frame of the app's: it has no standardized form, so it reaches the
        client unchanged at every stage, queued on the one writer in order."""
        self.route.feed_legacy_bytes(bytes(data))


class ClientGone(RuntimeError):
    """A send on a socket whose connection is closed (overflow, policy, gone).

    Raised to the app's code, as Starlette raises on a closed socket, so the app's
    manager drops the socket as it always did.
    """


class ServicePort:
    """The one writer's transport for a route, and the filter of the service's frames.

    The service holds the route's connection as a
    :class:`~service.connection.FeedConnection` over this port: its frames pass
    :meth:`accepts` (the route's new-side mode, decided when a frame is queued),
    the legacy side's frames are fed unfiltered, and this port writes whatever the
    writer hands it, whatever the stage. A flip changes only who feeds it.
    """

    __slots__ = ("route",)

    def __init__(self, route: Route) -> None:
        self.route = route

    def accepts(self, text: str) -> bool:
        """Whether the service's ``text`` is for the client (recording it if compared)."""
        route = self.route
        mode = route.new_mode
        if mode is Mode.DELIVER:
            route.counters.new_sent += 1
            if route.comparing:
                route.record(route, Side.NEW, text)
            return True
        if mode is Mode.RECORD:
            route.record(route, Side.NEW, text)
        return False

    def write_now(self, data: str) -> bool:
        """The synchronous fast path: ``False`` when ``send_text`` must write."""
        write_now = self.route.write_now
        return write_now is not None and write_now(data)

    async def send_text(self, data: str) -> None:
        await self.route.socket.send_text(data)

    async def send_bytes(self, data: bytes) -> None:
        send_bytes = getattr(self.route.socket, "send_bytes", None)
        if send_bytes is None:
            raise TypeError("this socket cannot send binary frames")
        await send_bytes(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.route.socket.close(code, reason)
