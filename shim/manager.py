"""CompatWebSocketManager: the legacy manager's interface, routed by migration stage.

A backend migrates by changing one line::

    manager = WebSocketManager()                       # before
    manager = CompatWebSocketManager(decider=flags)    # after; endpoint code unchanged

or, for a backend with a manager class of its own::

    manager = CompatWebSocketManager(legacy=JobManager(), rules=job_rules(), decider=flags)

The app's manager keeps working as it did: ``connect`` passes its extra
arguments through, it holds the real client sockets, every attribute the shim
does not define (its own methods, its state) is the app manager's, and every
send it makes on a socket, from any of its methods, is routed by that socket's
stage (see :mod:`shim.ports`).

Every connection is attached to both sides through ports (see :mod:`shim.ports`);
its stage decides which side reaches the socket and which only records for the
differ. Dual-write:

- an old producer's ``manager.broadcast(dict)`` goes to the legacy manager as is
  and to ``service.broadcast`` translated to the standardized message on its topic;
- a new producer's ``service.broadcast(WebSocketMessage)`` is mirrored to the
  legacy manager in the old shape (a publish hook, in the publishing process).

Each client gets each event from exactly one side, in its own wire format. Stage
decisions are taken when a connection arrives and when the decider reports a flag
change, never per message; a change waits for in-flight broadcasts to finish (at
most ``flip_wait`` seconds), so no event is delivered twice or lost across a flip.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
import structlog
from starlette.exceptions import WebSocketException
from starlette.websockets import WebSocketDisconnect

from legacy.manager import WebSocketManager
from service import MessageType, WebSocketMessage, WebSocketService
from service.auth import AUTH_MESSAGE_TYPE, MAX_AUTH_MESSAGE_SIZE
from service.brokers import MemoryBroker, Publication
from service.connection import FeedConnection
from service.directsend import (
    abort_connection,
    direct_writer,
    forget_handshake,
    transport_probe,
)
from service.errors import (
    ConnectionRefused,
    ErrorCode,
    ProtocolError,
    UnknownConnection,
)
from service.hub import ALL_TOPIC
from service.messages import PROTOCOL_TYPES, type_name
from service.protocol import (
    Ping,
    Pong,
    Reauthenticate,
    Subscribe,
    Unsubscribe,
    connection_established,
    error_message,
    parse_client_frame,
    pong,
    subscription_ack,
)

from .diff import Differ, Side
from .ports import (
    IN_DUAL_WRITE,
    DeliveryCounters,
    Mode,
    RealSocket,
    Route,
    SentText,
    ServicePort,
    starlette_json_text,
)
from .scope import ProducerScope, run_eagerly
from .stages import FixedStages, RoutingDecision, StageDecider
from .translate import TEXT_KEY, TranslationError, TranslationRule, Translator
from .wire import WireFormat, negotiate

__all__ = ["LEGACY_CODEC", "CompatWebSocketManager", "UserKey", "default_user_key"]

LEGACY_CODEC = "legacy"

#: Close code for a binary frame sent to an old-protocol endpoint that reads text.
UNSUPPORTED_DATA = 1003
#: What the endpoint sees once the service has closed a client for a policy
#: (1008/1009 went to the client): 1006, as for any connection it lost.
SERVICE_CLOSED = 1006

_log = structlog.get_logger("shim")

#: Set while the shim itself publishes into the service, so its publish hook does
#: not mirror the shim's own dual-write back to the legacy side.
_FROM_SHIM: contextvars.ContextVar[bool] = contextvars.ContextVar("from_shim", default=False)

#: Frames of an envelope client the shim answers itself (the endpoint never sees them).
_CONTROL_TYPES = frozenset(
    {"subscribe", "unsubscribe", "ping", "pong", "heartbeat", AUTH_MESSAGE_TYPE}
)
#: ... and of an authenticated old-protocol client: only its token refreshes.
_LEGACY_CONTROL_TYPES = frozenset({AUTH_MESSAGE_TYPE})


class _AccessPort(ServicePort):
    """The service port of a route, through which the service's rules act at every stage.

    The service's closes (token expired 1008, slow client 1013, message too big
    1009, shutdown 1001) reach the client's socket whatever the stage: its one
    writer, its access rules and its limits are the service's, for both sides.
    """

    __slots__ = ()

    @property
    def scope(self) -> Any:
        """The client socket's ASGI scope, for an authenticator verifying an ``auth`` refresh."""
        return getattr(self.route.socket, "scope", None)

    def abort(self) -> bool:
        """A close that timed out on the client's socket: drop its TCP connection."""
        return abort_connection(_scope(self.route.websocket))

    def write_buffer_size(self) -> int:
        """What the server's transport holds unsent for the client (pongs included),
        for the service's ``max_transport_bytes`` cap; 0 when it cannot tell."""
        probe = transport_probe(_scope(self.route.websocket))
        return 0 if probe is None else probe()


class _FlipGate:
    """Lets broadcasts run concurrently but makes a stage flip wait for them.

    A broadcast delivers through both sides one after the other; flipping a route
    between the two halves would send its event twice or not at all. Flips
    therefore wait (bounded) until no broadcast is in flight, and broadcasts that
    start while a flip waits queue behind it.
    """

    def __init__(self) -> None:
        self._inflight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._open = asyncio.Event()
        self._open.set()

    @asynccontextmanager
    async def broadcast(self) -> Any:
        if not self._open.is_set():
            await self._open.wait()
        self._inflight += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._quiet.set()

    async def flip(self, apply: Callable[[], object], *, wait: float) -> bool:
        """Run ``apply`` between broadcasts; False if it had to run after ``wait``."""
        self._open.clear()
        try:
            try:
                await asyncio.wait_for(self._quiet.wait(), wait)
                quiet = True
            except TimeoutError:
                quiet = False
            apply()
            return quiet
        finally:
            self._open.set()


class CompatWebSocketManager:
    """Drop-in for the legacy ``WebSocketManager`` that routes by migration stage.

    Keyword-only configuration:

    - ``service``: the new service (default: ``service.websocket_service``).
    - ``legacy``: the app's manager instance, whatever its class (default: a new
      ``WebSocketManager``). It needs ``connect(websocket, ...)`` and
      ``disconnect(websocket, ...)``; ``broadcast(payload)`` for the dual-write.
    - ``decider``: where stages come from (default: everything ``legacy``).
    - ``rules``: the app's translation rules (default: the toolkit's catalogue),
      or ``translator``: a ready :class:`Translator`; and the ``differ``.
    - ``endpoint_topics``: topics each endpoint's connections subscribe to on the new
      side (default: every topic the translator knows, which is what legacy sent).
    - ``flip_wait``: how long a flip waits for in-flight broadcasts.
    - ``producer_scope``: who an old producer's ``broadcast(payload)`` is for when
      several workers share a broker (:class:`~shim.scope.ProducerScope`):
      ``CLUSTER`` every worker's clients once, ``WORKER`` (the default) this
      worker's only; ``broadcast(payload, producer_scope=...)`` overrides it per call.
      With the in-process memory broker there is one worker and no difference.
    - ``user_key``: ``user_key(websocket, principal) -> str | None``, who a client
      is, so a percentage rollout keeps each user on one side and Unleash sees
      ``userId`` (default :func:`default_user_key`: ``?user_id=``, ``X-User-Id``,
      else the authenticated principal's ``sub``); None: the connection id.
    """

    def __init__(
        self,
        *,
        service: WebSocketService | None = None,
        legacy: Any = None,
        decider: StageDecider | None = None,
        rules: Iterable[TranslationRule] | None = None,
        translator: Translator | None = None,
        differ: Differ | None = None,
        endpoint_topics: Mapping[str, Sequence[str]] | None = None,
        flip_wait: float = 1.0,
        producer_scope: ProducerScope | None = None,
        diff_flush_interval: float = 0.5,
        random_source: Callable[[], float] = random.random,
        user_key: UserKey | None = None,
    ) -> None:
        if service is None:
            from service import websocket_service

            service = websocket_service
        self.service = service
        self.legacy: Any = legacy if legacy is not None else WebSocketManager()
        self.decider: StageDecider = decider if decider is not None else FixedStages()
        if translator is not None and rules is not None:
            raise ValueError("give rules or translator, not both")
        self.translator = translator if translator is not None else Translator(rules=rules)
        self.differ = differ if differ is not None else Differ()
        self.endpoint_topics = {k: tuple(v) for k, v in (endpoint_topics or {}).items()}
        self.default_topics = tuple(self.translator.topics())
        self.flip_wait = flip_wait
        self.diff_flush_interval = diff_flush_interval
        self._random = random_source
        self.user_key: UserKey = user_key or default_user_key
        self._routes: dict[int, Route] = {}  # id(real socket) -> route
        self._gate: _FlipGate | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._cleanup: set[asyncio.Task[Any]] = set()
        self._canon_cache: dict[tuple[int, bool], tuple[object, dict[str, Any]]] = {}
        self._direct_cache: tuple[object, WebSocketMessage] | None = None
        # The payload of the legacy broadcast in progress, its text (encoded once)
        # and its topic on the new side.
        self._legacy_text: tuple[object, str | None, str] | None = None
        self._counters: Counter[str] = Counter()
        self.delivered = DeliveryCounters()
        self.last_reroute: dict[str, float] = {}
        self.producer_scope = producer_scope or ProducerScope.WORKER
        self._single_process = isinstance(self.service.broker, MemoryBroker)
        if producer_scope is None and not self._single_process:
            _log.warning(
                "producer_scope_unset",
                default=self.producer_scope.value,
                hint="several workers share the broker: pass producer_scope=ProducerScope."
                "CLUSTER (broadcasts triggered once) or WORKER (a loop in every worker)",
            )
        self.service.register_codec(LEGACY_CODEC, self._render_legacy)
        self._remove_hook = self.service.add_publish_hook(self._mirror_to_legacy)
        self._remove_fanout = self.service.add_fanout_listener(self._on_publication)
        self._remove_listener = self.decider.add_listener(self._on_flags_changed)

    # -- the legacy interface ------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Whatever the shim does not define is the app's manager's (methods, state)."""
        if name.startswith("__") or name == "legacy":
            raise AttributeError(name)
        return getattr(self.legacy, name)

    @property
    def active_connections(self) -> list[Any]:
        """The connected client sockets, oldest first (the legacy attribute)."""
        return [route.websocket for route in self._routes.values()]

    @property
    def connections(self) -> list[Any]:
        """Alias of :attr:`active_connections` (the migration guide's name)."""
        return self.active_connections

    async def connect(self, websocket: Any, *args: Any, **kwargs: Any) -> Any:
        """Accept the client, attach it to both sides and route it by stage.

        ``args``/``kwargs`` go to the app manager's ``connect`` with the real
        socket, whose result is returned; its ``accept()`` is then a no-op.

        The service's access rules (origin, authentication, connection limits) run
        first, on the real socket: a refused client gets HTTP 403 (or close 1008
        after a first ``auth`` message) through Starlette's WebSocketException, so
        the endpoint code needs no change. Topics of ``endpoint_topics`` that the
        service's ``authorize`` refuses are skipped (an envelope client is told).

        When the client's token expires the service closes the socket with 1008
        ``token expired``, whichever side delivers to it, unless the client sent
        a fresh token in an ``auth`` message first: the shim answers those (for an
        authenticated old-protocol client too) and the endpoint never sees them.
        An old client offering ``legacy.v1`` (see :mod:`shim.wire`) gets it echoed.
        """
        wire_format, subprotocol = negotiate(_offered_subprotocols(websocket), _query(websocket))
        try:
            admission = await self.service.admit(websocket, subprotocol=subprotocol, close=False)
        except ConnectionRefused as refusal:
            raise WebSocketException(code=refusal.code, reason=refusal.reason) from None
        if _state_name(websocket) in (None, "CONNECTING"):  # first-message auth accepts it
            if subprotocol is not None:
                await websocket.accept(subprotocol=subprotocol)
            else:
                await websocket.accept()
        endpoint = _endpoint(websocket)
        user_id = self.user_key(websocket, admission.principal)
        route = Route(
            websocket,
            connection_id="",
            endpoint=endpoint,
            wire_format=wire_format,
            stickiness_key="",
            record=self._record,
            counters=self.delivered,
            render_envelope=self._render_envelope,
        )
        route.service_port = _AccessPort(route)
        route.encode_legacy = self._encode_legacy
        route.write_now = direct_writer(websocket)
        route.socket = RealSocket(websocket)
        route.send_direct = self._send_direct
        forget_handshake(_scope(websocket))
        metadata = {"endpoint": endpoint, "format": wire_format.value, "via": "shim"}
        if user_id:
            metadata["user_id"] = user_id
        route.connection_id = await self.service.connect(
            route.service_port,
            metadata,
            accept=False,
            codec=LEGACY_CODEC if wire_format is WireFormat.LEGACY else None,
            heartbeat=False,
            announce=False,
            admission=admission,
            accepts=route.service_port.accepts,
        )
        writer = self.service.connection(route.connection_id)
        assert isinstance(writer, FeedConnection)
        route.feed = writer.feed
        route.feed_bytes = writer.feed_bytes
        route.topic_of = self._topic_of
        if wire_format is WireFormat.ENVELOPE:
            # First frame on the socket, before any event can be routed to it.
            hello = connection_established(
                route.connection_id,
                heartbeat_interval=None,
                metadata=metadata,
                expires_at=self.service.expires_at(route.connection_id),
            )
            route.feed(_dumps(hello.to_wire()))
            _intercept_control_frames(websocket, self, route, _CONTROL_TYPES)
        elif admission.principal is not None:
            _intercept_control_frames(websocket, self, route, _LEGACY_CONTROL_TYPES)
        else:
            _intercept_control_frames(websocket, self, route, frozenset())
        route.stickiness_key = user_id or route.connection_id
        self._decide(route, self._evaluate(route))
        self._routes[id(websocket)] = route
        route.legacy_port.install(websocket)
        try:
            result = await self.legacy.connect(websocket, *args, **kwargs)
        except BaseException:
            self._forget(route)
            raise
        forbidden: list[ProtocolError] = []
        for topic in self.endpoint_topics.get(endpoint, self.default_topics):
            try:
                await self.service.subscribe(route.connection_id, topic)
            except ProtocolError as error:
                if error.code is not ErrorCode.FORBIDDEN:
                    raise
                forbidden.append(error)
        if wire_format is WireFormat.ENVELOPE:
            for refused in forbidden:
                route.feed(_dumps(error_message(refused).to_wire()))
        route.forbidden = await self._forbidden_topics(route)
        self._ensure_background()
        _log.debug(
            "shim_connected",
            connection_id=route.connection_id,
            endpoint=endpoint,
            format=wire_format.value,
            stage=route.stage.value,
        )
        return result

    def disconnect(self, websocket: Any, *args: Any, **kwargs: Any) -> Any:
        """Detach a client from both sides; the app manager's ``disconnect`` gets the
        arguments (and its result is returned, awaitable if the app's is async)."""
        route = self._routes.pop(id(websocket), None)
        result = self.legacy.disconnect(websocket, *args, **kwargs)
        if route is not None:
            self._detach(route)
        return result

    def _forget(self, route: Route) -> None:
        """The socket is gone (or never made it): drop the route, keep the app's state."""
        if self._routes.get(id(route.websocket)) is route:
            del self._routes[id(route.websocket)]
            self._detach(route)

    def _detach(self, route: Route) -> None:
        if route.stage.compares and route.sampled:
            self.differ.close(route.connection_id)
        self._spawn(self.service.disconnect(route.connection_id))

    async def _send_direct(self, route: Route, payload: object) -> None:
        """The new side of a send the app made to one socket outside a broadcast."""
        with suppress(UnknownConnection):
            await self.service.send(route.connection_id, self._direct_message(payload))

    def _direct_message(self, payload: object) -> WebSocketMessage:
        # The same payload object sent to many sockets in a row (an app's own
        # ``broadcast_to_session`` loop) is translated once.
        cached = self._direct_cache
        if cached is not None and cached[0] is payload:
            return cached[1]
        message = self._standard_for(payload)
        self._direct_cache = (payload, message)
        return message

    def _topic_of(self, payload: object) -> str:
        """The topic ``payload`` has on the new side (for ``authorize`` on the legacy side)."""
        current = self._legacy_text
        if current is not None and current[0] is payload:
            return current[2]
        return self._direct_message(payload).topic or self.translator.untranslated_topic

    async def _forbidden_topics(self, route: Route) -> frozenset[str]:
        """The topics ``authorize`` keeps from this client: neither side delivers them."""
        if self.service.authorize is None:
            return frozenset()
        topics = {
            *self.translator.topics(),
            self.translator.untranslated_topic,
            *self.endpoint_topics.get(route.endpoint, ()),
        }
        forbidden = set()
        for topic in sorted(topics):
            try:
                await self.service.check_access(route.connection_id, topic)
            except ProtocolError:
                forbidden.add(topic)
        return frozenset(forbidden)

    def _standard_for(self, payload: object) -> WebSocketMessage:
        if isinstance(payload, SentText):
            try:
                value = orjson.loads(payload.text)
            except orjson.JSONDecodeError:
                translation = self.translator.text_to_standard(payload.text)
                return translation.message
            return self._to_standard(value)[0]
        return self._to_standard(payload)[0]

    async def send_personal_message(self, message: Any, websocket: Any, *args: Any) -> Any:
        """The app manager's ``send_personal_message``: its sends are routed by stage."""
        sender = getattr(self.legacy, "send_personal_message", None)
        if sender is not None:
            return await sender(message, websocket, *args)
        if isinstance(message, str):
            await websocket.send_text(message)
        else:
            await websocket.send_json(message)
        return None

    async def broadcast(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        """Dual-write an old producer's payload to both sides (see the module docstring).

        Any JSON value is a payload (a dict, a list, a string, a number). A payload
        JSON cannot encode is counted and logged and reaches nobody (the legacy
        manager would have dropped every client over it). Extra arguments (an app
        manager's ``broadcast(payload, room)``) make it one of the app's own
        methods: its sends are routed per socket, like ``broadcast_to_session``.
        """
        scope = kwargs.pop("producer_scope", None) or self.producer_scope
        if args or kwargs:
            return await self.legacy.broadcast(message, *args, **kwargs)
        try:
            orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            self._counters["unserializable"] += 1
            _log.error("legacy_payload_unserializable", error=str(exc))
            return
        for old_client in (False, True):  # the producer may reuse a mutated dict
            self._canon_cache.pop((id(message), old_client), None)
        standard, topic = self._to_standard(message)
        worker_only = scope is ProducerScope.WORKER and not self._single_process
        async with self._flip_gate().broadcast():
            await self._legacy_broadcast(message, topic)
            token = _FROM_SHIM.set(True)
            try:
                if worker_only:
                    self.service.deliver_local(standard, topic=topic)
                else:  # every other worker runs its legacy side (_on_publication)
                    await self.service.broadcast(standard, topic=topic)
            except Exception as exc:
                self._counters["new_side_errors"] += 1
                _log.error(
                    "new_side_broadcast_failed", error=repr(exc), type=type_name(standard.type)
                )
            finally:
                _FROM_SHIM.reset(token)
        return None

    # -- translation and the new producer's mirror -----------------------------------

    def _to_standard(self, payload: Any) -> tuple[WebSocketMessage, str]:
        try:
            translation = self.translator.to_standard(payload)
        except TranslationError as exc:
            self._counters["translation_errors"] += 1
            _log.error("translation_failed", rule=exc.rule, reason=exc.reason)
            fallback = WebSocketMessage(type=MessageType.CUSTOM, data={"legacy": payload})
            return fallback, self.translator.untranslated_topic
        message = translation.message
        return message, message.topic or self.translator.untranslated_topic

    async def _mirror_to_legacy(self, message: WebSocketMessage, topic: str | None) -> None:
        """Publish hook: a new producer's message reaches this worker's legacy-routed
        clients too (other workers': :meth:`_on_publication`)."""
        if _FROM_SHIM.get() or not self._routes:
            return
        wire = message.model_copy(update={"topic": topic}).to_wire()
        payload = self._legacy_form(wire)
        if payload is None:
            return
        async with self._flip_gate().broadcast():
            await self._legacy_broadcast(
                payload, topic or message.topic or self.translator.untranslated_topic
            )

    def _on_publication(self, publication: Publication, own: bool) -> None:
        """Fan-out listener: another worker's event, for this worker's legacy side.

        The worker that published it ran its legacy side already (``own``). Here
        the old payload is rebuilt from the envelope and handed to the app's
        manager right before the service's local fan-out, in the same step, so
        each client gets the event once from whichever side feeds it.
        """
        if own or not self._routes:
            return
        wire = orjson.loads(publication.payload)
        topic = None if publication.topic == ALL_TOPIC else publication.topic
        payload = self._legacy_form(wire)
        if payload is None:
            return
        rest = run_eagerly(
            self._legacy_broadcast(payload, topic or self.translator.untranslated_topic)
        )
        if rest is not None:  # the app's manager awaited something real
            self._counters["legacy_side_suspended"] += 1
            self._cleanup.add(rest)
            rest.add_done_callback(self._cleanup.discard)

    def _legacy_form(self, wire: dict[str, Any]) -> Any:
        """The old payload of a new-side message, or None; cached for the differ."""
        try:
            payload = self.translator.to_legacy(wire)
        except TranslationError as exc:
            self._counters["translation_errors"] += 1
            _log.error("reverse_translation_failed", rule=exc.rule, reason=exc.reason)
            return None
        if payload is not None:
            # What the legacy side delivers is this very message in the old shape;
            # compare it as such (a topic=None broadcast keeps topic None).
            self._cached(payload, lambda: wire)
        return payload

    async def _legacy_broadcast(self, payload: Any, topic: str) -> None:
        """The legacy manager's broadcast, with ``payload`` encoded once for all ports."""
        self._legacy_text = (payload, None, topic)
        token = IN_DUAL_WRITE.set(True)
        try:
            await self.legacy.broadcast(payload)
        finally:
            IN_DUAL_WRITE.reset(token)
            self._legacy_text = None
        self._reap_dead_legacy_ports()

    def _encode_legacy(self, payload: Any) -> str:
        """Starlette's ``send_json`` text for ``payload``, once per broadcast."""
        current = self._legacy_text
        if current is None or current[0] is not payload:
            return starlette_json_text(payload)
        text = current[1]
        if text is None:
            text = starlette_json_text(payload)
            self._legacy_text = (payload, text, current[2])
        return text

    def _render_legacy(self, wire: dict[str, Any]) -> str | None:
        """Service codec for old clients: the standardized message as the old frame."""
        return self.translator.to_legacy_text(wire)

    def _render_envelope(self, payload: Any) -> str | None:
        """Legacy side to an envelope client: the payload as a standardized message."""
        return _dumps(self._canonical_legacy(payload))

    # -- the differ ----------------------------------------------------------------

    def _record(self, route: Route, side: Side, delivered: object) -> None:
        try:
            if route.format is WireFormat.LEGACY:
                # What an old client sees, exactly: the payload legacy sends vs the
                # frame the new side renders (a lossy rule is a field mismatch).
                canonical = self._as_old_client_sees(delivered, side)
            elif side is Side.LEGACY:
                canonical = self._canonical_legacy(delivered)
            else:
                canonical = self._canonical_new(route.format, delivered)
                kind = canonical.get("type")
                if kind in PROTOCOL_TYPES:  # protocol, not an event: never compared
                    if kind == "subscribed":
                        _note_resume(route, canonical)
                    return
                if route.replay_floors and _is_replay(route, canonical):
                    return  # what it missed while away: the legacy side never sent it
        except Exception as exc:
            self._counters["record_errors"] += 1
            _log.warning("diff_record_failed", side=side.value, error=repr(exc))
            return
        self.differ.record(route.connection_id, side, canonical)

    def _cached(
        self, obj: object, make: Callable[[], dict[str, Any]], *, old: bool = False
    ) -> dict[str, Any]:
        # One broadcast hands the same object to every recipient: convert it once.
        key = (id(obj), old)
        entry = self._canon_cache.get(key)
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = make()
        if len(self._canon_cache) > 256:
            self._canon_cache.clear()
        self._canon_cache[key] = (obj, value)
        return value

    def _canonical_legacy(self, payload: object) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            message = self._standard_for(payload)
            return message.model_copy(
                update={"topic": message.topic or self.translator.untranslated_topic}
            ).to_wire()

        return self._cached(payload, make)

    def _as_old_client_sees(self, delivered: object, side: Side) -> dict[str, Any]:
        """An old client's frame for the differ: its type and topic, the payload as ``data``."""

        def make() -> dict[str, Any]:
            value: object
            if side is Side.NEW or isinstance(delivered, SentText):
                text = delivered.text if isinstance(delivered, SentText) else str(delivered)
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError:
                    return {"type": "custom", "data": {TEXT_KEY: text}, "topic": None}
            else:
                value = delivered
            message, topic = self._to_standard(value)
            data = value if isinstance(value, dict) else {"value": value}
            return {"type": type_name(message.type), "data": data, "topic": topic}

        return self._cached(delivered, make, old=True)

    def _canonical_new(self, wire_format: WireFormat, text: object) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            value = orjson.loads(text if isinstance(text, str | bytes) else str(text))
            if wire_format is WireFormat.LEGACY:
                return self._canonical_legacy(value)
            if isinstance(value, dict):
                return value
            return {"type": "custom", "data": {"value": value}}

        return self._cached(text, make)

    async def _flush_differ_forever(self) -> None:
        while True:
            await asyncio.sleep(self.diff_flush_interval)
            self.differ.flush()

    # -- routing -------------------------------------------------------------------

    def _evaluate(self, route: Route) -> RoutingDecision:
        context = {
            "endpoint": route.endpoint,
            "connection_id": route.connection_id,
            "sessionId": route.connection_id,
        }
        if route.stickiness_key != route.connection_id:
            context["userId"] = route.stickiness_key
        return self.decider.decide(route.endpoint, route.stickiness_key, context)

    def _decide(self, route: Route, decision: RoutingDecision) -> bool:
        was_comparing = route.stage.compares and route.sampled
        sampled = decision.stage.compares and self._random() < decision.sample_rate
        changed = route.apply(decision, sampled=sampled)
        comparing = decision.stage.compares and sampled
        if comparing and not was_comparing:
            self.differ.open(route.connection_id, route.endpoint)
        elif was_comparing and not comparing:
            self.differ.close(route.connection_id)
        return changed

    def reroute(self) -> int:
        """Re-evaluate every live connection's stage now; return how many changed."""
        started = time.perf_counter()
        changed = 0
        for route in list(self._routes.values()):
            decision = self._evaluate(route)
            if decision != route.decision and self._decide(route, decision):
                changed += 1
        elapsed = time.perf_counter() - started
        self.last_reroute = {
            "connections": float(len(self._routes)),
            "changed": float(changed),
            "seconds": elapsed,
            "at": time.time(),
        }
        if changed:
            self._counters["rerouted_connections"] += changed
            _log.info("rerouted", changed=changed, connections=len(self._routes), seconds=elapsed)
        return changed

    def _on_flags_changed(self) -> None:
        self._counters["flag_changes"] += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.reroute()  # no loop (tests, scripts): nothing can be in flight
            return
        task = loop.create_task(self._flip())
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _flip(self) -> None:
        quiet = await self._flip_gate().flip(self.reroute, wait=self.flip_wait)
        if not quiet:
            _log.warning("flip_forced", reason="broadcasts still in flight", wait=self.flip_wait)

    def _flip_gate(self) -> _FlipGate:
        if self._gate is None:
            self._gate = _FlipGate()
        return self._gate

    # -- housekeeping --------------------------------------------------------------

    def _reap_dead_legacy_ports(self) -> None:
        """The legacy manager dropped a socket whose send failed: remove the route too.

        Only for a manager that lists its sockets in ``active_connections`` (as
        the legacy one does); otherwise routes go when their socket disconnects.
        """
        listed = getattr(self.legacy, "active_connections", None)
        if not isinstance(listed, list) or len(listed) == len(self._routes):
            return
        alive = {id(socket) for socket in listed}
        for key, route in list(self._routes.items()):
            if key not in alive:
                del self._routes[key]
                self._counters["dead_sockets_removed"] += 1
                self._detach(route)

    def _ensure_background(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_differ_forever())

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def stop(self) -> None:
        """Stop background work and compare everything still pending."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.differ.flush(force=True)
        if self._cleanup:
            await asyncio.wait(list(self._cleanup), timeout=2)

    def close(self) -> None:
        """Detach from the service and the decider (for apps that build several shims)."""
        self._remove_hook()
        self._remove_fanout()
        self._remove_listener()

    def routes(self) -> Iterator[Route]:
        return iter(list(self._routes.values()))

    def stats(self) -> dict[str, Any]:
        """Per endpoint: clients per stage, per format and per delivering side."""
        endpoints: dict[str, dict[str, Counter[str]]] = {}
        for route in self._routes.values():
            entry = endpoints.setdefault(
                route.endpoint,
                {"stages": Counter(), "formats": Counter(), "delivered_by": Counter()},
            )
            entry["stages"][route.stage.value] += 1
            entry["formats"][route.format.value] += 1
            entry["delivered_by"]["new" if route.new_mode is Mode.DELIVER else "legacy"] += 1
        return {
            "connections": len(self._routes),
            "endpoints": {
                name: {key: dict(counter) for key, counter in parts.items()}
                for name, parts in endpoints.items()
            },
            "counters": dict(self._counters),
            "delivered": self.delivered.as_dict(),
            "last_reroute": self.last_reroute,
            "translation": self.translator.stats(),
            "diff": self.differ.counters(),
        }


# -- helpers over Starlette's WebSocket (duck-typed so tests can pass doubles) ----------

#: ``user_key(websocket, principal) -> str | None``: see ``CompatWebSocketManager``.
UserKey = Callable[[Any, Any], str | None]


def default_user_key(websocket: Any, principal: Any) -> str | None:
    """``?user_id=``, else the ``X-User-Id`` header, else the principal's ``sub`` claim."""
    user_id = _query(websocket).get("user_id") or _header(websocket, "x-user-id")
    if user_id:
        return str(user_id)
    subject = principal.get("sub") if isinstance(principal, Mapping) else None
    return str(subject) if subject else None


def _scope(websocket: Any) -> Mapping[str, Any]:
    scope = getattr(websocket, "scope", None)
    return scope if isinstance(scope, Mapping) else {}


def _endpoint(websocket: Any) -> str:
    return str(_scope(websocket).get("path", "/ws"))


def _state_name(websocket: Any) -> str | None:
    state = getattr(websocket, "application_state", None)
    return None if state is None else str(getattr(state, "name", state))


def _offered_subprotocols(websocket: Any) -> list[str]:
    return [str(p) for p in _scope(websocket).get("subprotocols", ())]


def _query(websocket: Any) -> dict[str, str]:
    params = getattr(websocket, "query_params", None)
    return {} if params is None else {str(k): str(v) for k, v in params.items()}


def _header(websocket: Any, name: str) -> str | None:
    headers = getattr(websocket, "headers", None)
    value = None if headers is None else headers.get(name)
    return None if value is None else str(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _intercept_control_frames(
    websocket: Any, manager: CompatWebSocketManager, route: Route, types: frozenset[str]
) -> None:
    """Apply the service's inbound rules to every frame, without touching endpoint code.

    The legacy endpoint keeps calling ``websocket.receive_text()``; this wraps the
    socket's ``receive`` so that, at every stage:

    - every frame passes the service's size policy and rate limit first
      (:meth:`~service.hub.WebSocketService.screen_frame`): close 1009 for an
      oversized frame, ``rate_limited`` (an envelope client is told) or close 1008;
    - control frames of ``types`` (``subscribe``/``unsubscribe``/``ping``/``pong``/
      ``auth`` for an envelope client, ``auth`` only for an old one) are answered
      by the shim, in the envelope, through the client's one writer;
    - a binary frame, which ``receive_text()`` cannot return, gets the documented
      answer (:func:`_refuse_binary`) instead of a ``KeyError`` in the endpoint;
    - the route goes when the socket does, whatever the endpoint's code does.

    Every other frame reaches the endpoint as before.
    """
    original = getattr(websocket, "receive", None)
    if original is None:
        return

    async def receive() -> Any:
        while True:
            message = await original()
            kind = message.get("type")
            if kind == "websocket.disconnect":
                manager._forget(route)  # the app may never call disconnect
                return message
            if kind != "websocket.receive":
                return message
            text = message.get("text")
            control = text is not None and _looks_like_control(text, types)
            if control and route.new_mode is Mode.DELIVER and route.format is WireFormat.ENVELOPE:
                await _answer_control(manager, route, text)  # the service screens it
                continue
            data = text if text is not None else message.get("bytes") or b""
            try:
                process, reply = await manager.service.screen_frame(route.connection_id, data)
            except UnknownConnection:
                process, reply = False, None
            if not process:
                if not manager.service.is_connected(route.connection_id):
                    # The service closed it (1009, 1008, expired token): frames the
                    # server had already read are not the app's to see.
                    manager._forget(route)
                    return {"type": "websocket.disconnect", "code": SERVICE_CLOSED}
                if reply is not None and route.format is WireFormat.ENVELOPE:
                    _feed(route, reply)
                continue
            if control:
                await _answer_control(manager, route, text)
                continue
            return message

    async def receive_text() -> str:
        while True:
            message = await receive()
            if message.get("type") == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            text = message.get("text")
            if text is not None:
                return str(text)
            await _refuse_binary(manager, route)

    original_receive_json = getattr(websocket, "receive_json", None)

    async def receive_json(mode: str = "text") -> Any:
        if mode != "text" and original_receive_json is not None:
            return await original_receive_json(mode)
        return json.loads(await receive_text())

    websocket.receive = receive
    if hasattr(websocket, "receive_text"):
        websocket.receive_text = receive_text
    if original_receive_json is not None:
        websocket.receive_json = receive_json


async def _refuse_binary(manager: CompatWebSocketManager, route: Route) -> None:
    """A binary frame where the endpoint reads text: ``binary_not_supported`` for an
    envelope client (the connection stays), close 1003 for an old-protocol one
    (the endpoint sees the disconnect and runs its cleanup)."""
    manager._counters["binary_refused"] += 1
    if route.format is WireFormat.ENVELOPE:
        detail = "send JSON as text frames, not binary"
        _feed(route, error_message(ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, detail)))
        return
    await manager.service.disconnect(
        route.connection_id, code=UNSUPPORTED_DATA, reason="binary frames are not supported"
    )
    manager._forget(route)
    raise WebSocketDisconnect(UNSUPPORTED_DATA, "binary frames are not supported")


def _feed(route: Route, message: WebSocketMessage) -> None:
    if route.feed is not None:
        route.feed(_dumps(message.to_wire()))


def _looks_like_control(text: str, types: frozenset[str]) -> bool:
    # An auth message carries a token (up to MAX_AUTH_MESSAGE_SIZE); the rest is small.
    if len(text) > MAX_AUTH_MESSAGE_SIZE or '"type"' not in text:
        return False
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and value.get("type") in types


def _note_resume(route: Route, ack: Mapping[str, Any]) -> None:
    """After a resume's ``subscribed`` ack, the topic's messages up to its position are
    a replay (or retained last values), delivered by the new side alone."""
    data = ack.get("data")
    if not isinstance(data, Mapping) or "recovered" not in data:
        return
    topic, seq = data.get("topic"), data.get("seq")
    if isinstance(topic, str) and isinstance(seq, int):
        floors = route.replay_floors if route.replay_floors is not None else {}
        floors[topic] = (data.get("epoch"), seq)
        route.replay_floors = floors


def _is_replay(route: Route, event: Mapping[str, Any]) -> bool:
    floors = route.replay_floors
    topic, seq = event.get("topic"), event.get("seq")
    if floors is None or not isinstance(topic, str) or not isinstance(seq, int):
        return False
    floor = floors.get(topic)
    if floor is None:
        return False
    if event.get("epoch") == floor[0] and seq <= floor[1]:
        return True
    del floors[topic]  # the first live message: the replay is over
    return False


async def _answer_control(manager: CompatWebSocketManager, route: Route, text: str) -> None:
    if route.new_mode is Mode.DELIVER and route.format is WireFormat.ENVELOPE:
        # The service delivers to this client: it answers the frame itself, so a
        # subscribe with ``resume`` gets its replay and a positioned ack, in order.
        # (An old-protocol client's replies stay envelopes, sent below: its codec
        # renders only events.)
        with suppress(UnknownConnection):  # dropped meanwhile: the socket is closing
            await manager.service.handle_message(route.connection_id, text)
        return
    try:
        event = parse_client_frame(text, max_size=manager.service.max_message_size)
        if isinstance(event, Subscribe):
            await manager.service.subscribe(route.connection_id, event.topic)
            # The legacy side delivers: events carry no position, so a resume (after
            # a rollback from the new side) cannot be honoured, and the ack says so.
            reply = subscription_ack(event, recovered=False if event.resume else None)
        elif isinstance(event, Unsubscribe):
            await manager.service.unsubscribe(route.connection_id, event.topic)
            reply = subscription_ack(event)
        elif isinstance(event, Ping):
            reply = pong(event)
        elif isinstance(event, Reauthenticate):
            refreshed = await manager.service.reauthenticate(
                route.connection_id, text, request_id=event.request_id
            )
            if refreshed is None:  # expired meanwhile: the service closed the socket
                return
            reply = refreshed
        elif isinstance(event, Pong):
            return
        else:  # pragma: no cover - _looks_like_control admits control types only
            return
    except ProtocolError as error:
        reply = error_message(error)
    except UnknownConnection:
        return  # the service dropped it (its token expired): the socket is closing
    _feed(route, reply)
