"""WebSocketService: ties the registry, the protocol, the broker and connections together.

Data flow of a broadcast::

    broadcast(message, topic)  -> encode once -> broker.publish(topic, bytes)
    broker handler(Publication) -> splice seq/epoch once -> for each local
                                   subscriber: connection.deliver(text)

``deliver`` is synchronous and never blocks (see :mod:`service.connection`), so
one fan-out loop serves every recipient and a slow client only fills its own
bounded buffer. Nothing on that path evaluates flags, logs or encodes per recipient.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from typing import Any

import structlog

from .brokers import Broker, Publication, from_url
from .connection import Connection, SendLimits, Transport
from .errors import (
    CloseCode,
    ErrorCode,
    ProtocolError,
    ServiceStopped,
    UnknownConnection,
)
from .messages import MessageType, WebSocketMessage, encode, with_sequence
from .protocol import (
    Dispatch,
    HeartbeatPolicy,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
    connection_established,
    error_message,
    parse_client_frame,
    pong,
    subscription_ack,
    validate_topic,
)
from .registry import TopicRegistry

__all__ = ["ALL_TOPIC", "Codec", "EventHandler", "PublishHook", "WebSocketService"]

#: Broker channel of ``broadcast(message, topic=None)``: every connection gets it.
ALL_TOPIC = "$all"

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None] | None]

#: Called by :meth:`WebSocketService.broadcast` in the publishing process, before the
#: message goes to the broker (the shim mirrors new producers to legacy clients here).
PublishHook = Callable[[WebSocketMessage, str | None], Awaitable[None]]

#: Renders a standardized wire dict for a client that speaks another format; ``None``
#: means "this client does not get this message". Called once per broadcast per codec.
Codec = Callable[[dict[str, Any]], str | None]

_log = structlog.get_logger("service")


class _Frame:
    """One publication, encoded once, rendered at most once per codec."""

    __slots__ = ("_rendered", "standard", "wire")

    def __init__(self, standard: str) -> None:
        self.standard = standard
        self.wire: dict[str, Any] | None = None
        self._rendered: dict[str, str | None] = {}

    def render(self, codec_name: str, codecs: Mapping[str, Codec]) -> str | None:
        try:
            return self._rendered[codec_name]
        except KeyError:
            pass
        if self.wire is None:
            import orjson

            self.wire = orjson.loads(self.standard)
        try:
            text = codecs[codec_name](self.wire)
        except Exception:  # a codec bug must not break fan-out for others
            _log.exception("codec_failed", codec=codec_name, type=self.wire.get("type"))
            text = None
        self._rendered[codec_name] = text
        return text


class WebSocketService:
    """Topic-based WebSocket hub with a standardized envelope (the migration guide's API).

    All configuration is keyword-only; ``None`` turns a feature off:

    - ``broker``: a :class:`~service.brokers.Broker` or URL (``memory://`` default,
      ``redis://127.0.0.1:6379/0`` for several processes).
    - ``heartbeat_interval``/``heartbeat_timeout`` seconds (``None`` interval: no
      heartbeats and no liveness checks).
    - ``max_message_size``: largest inbound text frame answered normally (bytes).
    - ``max_subscriptions``: per connection.
    - ``send_limits``: per-connection send buffer bounds and overflow policy.
    - ``retain``: ``{topic: key field}``; the topic keeps its latest message per
      ``data[key field]`` and a new subscriber gets them right after subscribing.
    - ``close_timeout``: how long a close frame may take before we give up on it.
    """

    def __init__(
        self,
        *,
        broker: Broker | str = "memory://",
        heartbeat_interval: float | None = 30.0,
        heartbeat_timeout: float = 10.0,
        max_message_size: int | None = 64 * 1024,
        max_subscriptions: int | None = 128,
        send_limits: SendLimits | None = None,
        retain: Mapping[str, str] | None = None,
        close_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker: Broker = from_url(broker) if isinstance(broker, str) else broker
        self.heartbeat = (
            None
            if heartbeat_interval is None
            else HeartbeatPolicy(heartbeat_interval, heartbeat_timeout)
        )
        self.max_message_size = max_message_size
        self.max_subscriptions = max_subscriptions
        self.send_limits = send_limits or SendLimits()
        self.retain: dict[str, str] = dict(retain or {})
        self.close_timeout = close_timeout
        self._clock = clock
        self._connections: dict[str, Connection] = {}
        self._registry: TopicRegistry[Connection] = TopicRegistry()
        self._handlers: dict[MessageType, EventHandler] = {}
        self._codecs: dict[str, Codec] = {}
        self._publish_hooks: list[PublishHook] = []
        self._broker_topics: set[str] = set()
        self._broker_lock = asyncio.Lock()
        self._broker_connected = False
        self._started = False
        self._stopping = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._counters = {
            "connections_total": 0,
            "disconnections_total": 0,
            "messages_published": 0,
            "messages_received": 0,
            "errors_sent": 0,
            "handler_errors": 0,
            "closed_slow": 0,
            "closed_send_failed": 0,
            "closed_heartbeat": 0,
        }
        # Counters of connections already gone, so stats() totals never go down.
        self._gone = {"sent": 0, "dropped": 0, "failed": 0}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect the broker and start heartbeats; idempotent.

        Also usable without calling: the first ``connect``/``broadcast`` connects the
        broker lazily, so the guide's test that never calls ``start()`` works.
        """
        self._stopping = False
        await self._ensure_broker()
        if self.heartbeat is not None and self._heartbeat_task is None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(self.heartbeat), name="websocket-service-heartbeat"
            )
        if not self._started:
            self._started = True
            _log.info("service_started", broker=self.broker.stats().get("kind"))

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Close every connection with 1001 and cancel every background task.

        Returns within about ``timeout`` seconds even when clients do not answer.
        Connections arriving while it runs are refused with ServiceStopped; after
        it returns the service is idle and may be used or started again.
        """
        self._stopping = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        connections = list(self._connections.values())
        for connection in connections:
            self._forget(connection)
        per_close = min(self.close_timeout, timeout)
        closes = [
            c.close(CloseCode.GOING_AWAY, "server shutting down", timeout=per_close)
            for c in connections
        ]
        if closes:
            await asyncio.wait([asyncio.ensure_future(c) for c in closes], timeout=timeout)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)
        if self._broker_connected:
            await self.broker.disconnect()
            self._broker_connected = False
        self._broker_topics.clear()
        if self._started:
            _log.info("service_stopped", closed_connections=len(connections))
        self._started = False
        self._stopping = False

    async def _ensure_broker(self) -> None:
        if not self._broker_connected:
            await self.broker.connect(self._on_publication)
            self._broker_connected = True

    # -- connections ---------------------------------------------------------------

    async def connect(
        self,
        websocket: Transport,
        metadata: Mapping[str, Any] | None = None,
        *,
        accept: bool = True,
        codec: str | None = None,
        heartbeat: bool = True,
        announce: bool = True,
        subprotocol: str | None = None,
    ) -> str:
        """Register a socket and return its new connection id.

        Accepts the socket first when it has an ``accept`` coroutine and is not yet
        accepted (pass ``accept=False`` if the caller accepted it), then sends
        ``connection_established`` carrying the id (``announce=False`` skips it, for
        clients that do not speak the new protocol). ``codec`` names a format
        registered with :meth:`register_codec` for clients that expect another
        payload shape; ``heartbeat=False`` exempts the connection from heartbeats
        (its client would not answer them). Raises ServiceStopped while stopping.
        """
        if self._stopping:
            raise ServiceStopped("the service is stopping; no new connections")
        if codec is not None and codec not in self._codecs:
            raise ValueError(f"unknown codec {codec!r}; register it first")
        await self._ensure_broker()
        if accept:
            await _accept_if_needed(websocket, subprotocol)
        connection_id = uuid.uuid4().hex
        connection = Connection(
            connection_id,
            websocket,
            metadata=dict(metadata or {}),
            limits=self.send_limits,
            on_dead=self._on_dead,
            last_seen=self._clock(),
            codec=codec,
            heartbeat=heartbeat and self.heartbeat is not None,
        )
        self._connections[connection_id] = connection
        self._counters["connections_total"] += 1
        await self._ensure_all_topic()
        if announce:
            self._send_to(
                connection,
                connection_established(
                    connection_id,
                    heartbeat_interval=self.heartbeat.interval if self.heartbeat else None,
                    metadata=connection.metadata,
                ),
            )
        _log.debug("connected", connection_id=connection_id, metadata=connection.metadata)
        return connection_id

    async def disconnect(
        self, connection_id: str, *, code: int | None = None, reason: str = ""
    ) -> None:
        """Unregister a connection and drop its subscriptions; unknown ids are ignored.

        With ``code`` the socket is also closed with that code (after the client
        disconnected by itself there is nothing left to close).
        """
        connection = self._connections.get(connection_id)
        if connection is None:
            return
        self._forget(connection)
        if code is not None:
            await connection.close(code, reason, timeout=self.close_timeout)
        else:
            connection.closed = True
            connection.cancel_writer()
        await self._reconcile_broker()

    def _forget(self, connection: Connection) -> None:
        if self._connections.pop(connection.connection_id, None) is None:
            return
        self._registry.remove(connection.connection_id)
        self._counters["disconnections_total"] += 1
        self._gone["sent"] += connection.sent
        self._gone["dropped"] += connection.dropped
        self._gone["failed"] += connection.failed

    def _on_dead(self, connection: Connection, reason: str, code: int) -> None:
        # Called from fan-out while it iterates the registry: defer the removal.
        if code == CloseCode.TRY_AGAIN_LATER or code == CloseCode.POLICY_VIOLATION:
            self._counters["closed_slow"] += 1
        else:
            self._counters["closed_send_failed"] += 1
        _log.warning(
            "connection_dropped",
            connection_id=connection.connection_id,
            reason=reason,
            close_code=code,
        )
        self._spawn(self._close_dead(connection, code, reason))

    async def _close_dead(self, connection: Connection, code: int, reason: str) -> None:
        self._forget(connection)
        await connection.close(code, reason, timeout=self.close_timeout)
        await self._reconcile_broker()

    def is_connected(self, connection_id: str) -> bool:
        """True while ``connection_id`` is registered and not closed."""
        connection = self._connections.get(connection_id)
        return connection is not None and not connection.closed

    def connection(self, connection_id: str) -> Connection:
        """Return the connection object; raises UnknownConnection."""
        try:
            return self._connections[connection_id]
        except KeyError:
            raise UnknownConnection(connection_id) from None

    @property
    def connections(self) -> Mapping[str, Connection]:
        """Read-only view of the registered connections by id."""
        return self._connections

    def topics_of(self, connection_id: str) -> frozenset[str]:
        return self._registry.topics_of(connection_id)

    # -- subscriptions -------------------------------------------------------------

    async def subscribe(self, connection_id: str, topic: str) -> None:
        """Subscribe a connection to ``topic`` (server-side; the client gets no ack).

        Retained last values of the topic are sent right away. Raises
        UnknownConnection, or ProtocolError for an invalid topic or too many
        subscriptions.
        """
        connection = self.connection(connection_id)
        await self._subscribe(connection, validate_topic(topic), ack=None)

    async def _subscribe(
        self, connection: Connection, topic: str, *, ack: Subscribe | None
    ) -> None:
        cid = connection.connection_id
        already = topic in self._registry.topics_of(cid)
        if (
            not already
            and self.max_subscriptions is not None
            and len(self._registry.topics_of(cid)) >= self.max_subscriptions
        ):
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.max_subscriptions} subscriptions per connection",
                request_id=None if ack is None else ack.request_id,
            )
        # Hold the lock until the registry holds the subscriber, so a concurrent
        # last-unsubscribe cannot drop the broker subscription underneath us.
        async with self._broker_lock:
            if topic not in self._broker_topics:
                await self.broker.subscribe(topic)
                self._broker_topics.add(topic)
            retained = await self.broker.last_values(topic) if topic in self.retain else []
            epoch, seq = await self.broker.position(topic) if ack is not None else (None, None)
            if connection.closed or cid not in self._connections:
                return
            if ack is not None:
                self._send_to(connection, subscription_ack(ack, seq=seq, epoch=epoch))
            for publication in retained:
                self._deliver_one(connection, publication)
            self._registry.subscribe(cid, connection, topic)

    async def unsubscribe(self, connection_id: str, topic: str) -> None:
        """Unsubscribe; unsubscribing a topic that was not subscribed is harmless."""
        self.connection(connection_id)
        self._registry.unsubscribe(connection_id, topic)
        await self._reconcile_broker()

    async def _reconcile_broker(self) -> None:
        """Make the broker's subscriptions match the topics that have local subscribers."""
        async with self._broker_lock:
            wanted = set(self._registry.topics())
            if self._connections:
                wanted.add(ALL_TOPIC)
            for topic in self._broker_topics - wanted:
                self._broker_topics.discard(topic)
                with suppress(Exception):
                    await self.broker.unsubscribe(topic)

    async def _ensure_all_topic(self) -> None:
        if ALL_TOPIC not in self._broker_topics:
            async with self._broker_lock:
                if ALL_TOPIC not in self._broker_topics:
                    await self.broker.subscribe(ALL_TOPIC)
                    self._broker_topics.add(ALL_TOPIC)

    # -- sending -------------------------------------------------------------------

    async def send(self, connection_id: str, message: WebSocketMessage) -> bool:
        """Send one message to one connection; False if it is gone."""
        connection = self._connections.get(connection_id)
        if connection is None or connection.closed:
            return False
        self._send_to(connection, message)
        return not connection.closed

    def _send_to(self, connection: Connection, message: WebSocketMessage) -> None:
        frame = _Frame(encode(message).decode())
        self._deliver_frame(connection, frame)

    def _deliver_frame(self, connection: Connection, frame: _Frame) -> None:
        if connection.codec is None:
            connection.deliver(frame.standard)
        else:
            text = frame.render(connection.codec, self._codecs)
            if text is not None:
                connection.deliver(text)

    def _deliver_one(self, connection: Connection, publication: Publication) -> None:
        frame = _Frame(
            with_sequence(publication.payload, publication.seq, publication.epoch).decode()
        )
        self._deliver_frame(connection, frame)

    async def broadcast(self, message: WebSocketMessage, topic: str | None = None) -> int:
        """Publish ``message`` to ``topic``'s subscribers (``None``: every connection).

        The message is encoded once with ``topic`` set and ``seq`` assigned by the
        broker. Returns the number of local recipients at publish time (with the
        default memory broker, every one of them has been handed the message when
        this returns). Raises BrokerUnavailable when the broker is down, and
        TypeError when ``message.data`` cannot be encoded as JSON.
        """
        if topic is not None:
            validate_topic(topic)
        channel = ALL_TOPIC if topic is None else topic
        if message.topic != topic or message.seq is not None or message.epoch is not None:
            message = message.model_copy(update={"topic": topic, "seq": None, "epoch": None})
        payload = encode(message)
        retain_field = self.retain.get(channel)
        retain_key = None
        if retain_field is not None:
            key = message.data.get(retain_field)
            retain_key = None if key is None else str(key)
        for hook in self._publish_hooks:
            try:
                await hook(message, topic)
            except Exception:
                _log.exception("publish_hook_failed", type=message.type.value, topic=topic)
        await self._ensure_broker()
        recipients = (
            len(self._connections) if topic is None else len(self._registry.subscribers(topic))
        )
        await self.broker.publish(channel, payload, retain_key=retain_key)
        self._counters["messages_published"] += 1
        return recipients

    def _on_publication(self, publication: Publication) -> None:
        """The broker's handler: the one fan-out loop."""
        if publication.topic == ALL_TOPIC:
            recipients: Iterable[Connection] = self._connections.values()
        else:
            recipients = self._registry.subscribers(publication.topic).values()
        text = with_sequence(publication.payload, publication.seq, publication.epoch).decode()
        frame: _Frame | None = None
        for connection in recipients:
            if connection.codec is None:
                connection.deliver(text)
            else:
                if frame is None:
                    frame = _Frame(text)
                rendered = frame.render(connection.codec, self._codecs)
                if rendered is not None:
                    connection.deliver(rendered)

    # -- inbound -------------------------------------------------------------------

    def register_event_handler(self, message_type: MessageType, handler: EventHandler) -> None:
        """Call ``handler(connection_id, data)`` for inbound messages of ``message_type``.

        The handler may be sync or async. One handler per type; registering again
        replaces it. Protocol types (subscribe, ping, ...) are handled by the service.
        """
        self._handlers[MessageType(message_type)] = handler

    def add_publish_hook(self, hook: PublishHook) -> Callable[[], None]:
        """Run ``hook(message, topic)`` on every broadcast made in this process.

        A hook that raises is logged and skipped; it never stops the broadcast.
        Returns a function that removes the hook.
        """
        self._publish_hooks.append(hook)
        return lambda: self._publish_hooks.remove(hook)

    def register_codec(self, name: str, codec: Codec) -> None:
        """Register a wire format for clients that do not speak the envelope."""
        self._codecs[name] = codec

    async def handle_message(self, connection_id: str, data: str | bytes) -> None:
        """Process one inbound frame of ``connection_id`` (the client protocol).

        Bad input is answered with an ``error`` message carrying a ``code``; the
        connection stays open. Raises UnknownConnection for an unregistered id.
        """
        connection = self.connection(connection_id)
        connection.last_seen = self._clock()
        self._counters["messages_received"] += 1
        try:
            if isinstance(data, bytes | bytearray):
                raise ProtocolError(
                    ErrorCode.BINARY_NOT_SUPPORTED, "send JSON as text frames, not binary"
                )
            event = parse_client_frame(data, max_size=self.max_message_size)
            if isinstance(event, Subscribe):
                await self._subscribe(connection, event.topic, ack=event)
            elif isinstance(event, Unsubscribe):
                self._registry.unsubscribe(connection_id, event.topic)
                self._send_to(connection, subscription_ack(event))
                await self._reconcile_broker()
            elif isinstance(event, Ping):
                self._send_to(connection, pong(event))
            elif isinstance(event, Pong):
                pass
            else:
                await self._dispatch(connection, event)
        except ProtocolError as error:
            self._counters["errors_sent"] += 1
            _log.info(
                "client_error",
                connection_id=connection_id,
                code=error.code.value,
                detail=error.detail,
            )
            self._send_to(connection, error_message(error))

    async def _dispatch(self, connection: Connection, event: Dispatch) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                f"no handler for message type {event.type.value!r}",
                request_id=event.request_id,
            )
        try:
            result = handler(connection.connection_id, event.data)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._counters["handler_errors"] += 1
            _log.exception(
                "handler_failed", connection_id=connection.connection_id, type=event.type.value
            )
            raise ProtocolError(
                ErrorCode.HANDLER_ERROR,
                f"the handler for {event.type.value!r} failed: {type(exc).__name__}",
                request_id=event.request_id,
            ) from exc

    # -- health --------------------------------------------------------------------

    async def _heartbeat_loop(self, policy: HeartbeatPolicy) -> None:
        while True:
            await asyncio.sleep(policy.interval)
            self.check_liveness()

    def check_liveness(self) -> list[str]:
        """Send one heartbeat to every heartbeat connection and drop the silent ones.

        Called every ``heartbeat_interval`` by ``start()``'s task; returns the ids it
        dropped (close code 4408).
        """
        if self.heartbeat is None:
            return []
        now = self._clock()
        text = encode(WebSocketMessage(type=MessageType.HEARTBEAT)).decode()
        dead = []
        for connection in self._connections.values():
            if not connection.heartbeat:
                continue
            if self.heartbeat.is_dead(connection.last_seen, now):
                dead.append(connection)
            else:
                connection.deliver(text)
        for connection in dead:
            self._counters["closed_heartbeat"] += 1
            _log.info("heartbeat_timeout", connection_id=connection.connection_id)
            self._forget(connection)
            self._spawn(
                self._close_forgotten(connection, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
            )
        return [c.connection_id for c in dead]

    async def _close_forgotten(self, connection: Connection, code: int, reason: str) -> None:
        await connection.close(code, reason, timeout=self.close_timeout)
        await self._reconcile_broker()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stats(self) -> dict[str, Any]:
        """Connections, topics, subscriptions and message counters (cheap to call)."""
        live = self._connections.values()
        return {
            "connections": len(self._connections),
            "topics": len(self._registry.topics()),
            "subscriptions": self._registry.subscription_count(),
            "messages_sent": self._gone["sent"] + sum(c.sent for c in live),
            "messages_dropped": self._gone["dropped"] + sum(c.dropped for c in live),
            "messages_failed": self._gone["failed"] + sum(c.failed for c in live),
            "send_backlog": sum(c.backlog for c in live),
            **self._counters,
            "broker": self.broker.stats(),
        }


async def _accept_if_needed(websocket: Any, subprotocol: str | None) -> None:
    accept = getattr(websocket, "accept", None)
    if accept is None:
        return
    state = getattr(websocket, "application_state", None)
    if state is not None and getattr(state, "name", "") != "CONNECTING":
        return
    if subprotocol is not None:
        await accept(subprotocol=subprotocol)
    else:
        await accept()
