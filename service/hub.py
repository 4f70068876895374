"""WebSocketService: ties the registry, the protocol, the broker and connections together.

Data flow of a broadcast::

    broadcast(message, topic)  -> encode once -> broker.publish(topic, bytes)
    broker handler(Publication) -> splice seq/epoch once -> for each local
                                   subscriber: connection.deliver(text)

``deliver`` is synchronous and never blocks (see :mod:`service.connection`), so
one fan-out loop serves every recipient and a slow client only fills its own
bounded buffer. Nothing on that path evaluates flags, logs or encodes per recipient.

Access rules (origin, authentication, connection counts) run once per connection
in :meth:`WebSocketService.admit`, authorization once per subscription, and the
rate limit once per inbound frame; none of them touches fan-out. A token's expiry
is one ``loop.call_at`` timer per authenticated connection, moved by an ``auth``
refresh and cancelled when the connection goes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from .auth import (
    Authenticate,
    Authorize,
    FirstMessageAuthenticator,
    credentials_expiry,
    default_principal_key,
)
from .brokers import Broker, Publication, from_url
from .connection import Connection, FeedConnection, SendLimits, Transport
from .directsend import forget_handshake
from .errors import (
    AuthenticationFailed,
    CloseCode,
    ConnectionRefused,
    ErrorCode,
    ProtocolError,
    ServiceStopped,
    UnknownConnection,
)
from .expiry import CredentialDeadlines
from .handshake import Handshake
from .limits import ConnectionCounter, OversizePolicy, RateLimit, RateLimiter, RateVerdict
from .messages import MessageType, WebSocketMessage, coerce_type, encode, type_name, with_sequence
from .origin import OriginPolicy
from .ownership import OwnPublications
from .protocol import (
    DEFAULT_MAX_TOPIC_LENGTH,
    Dispatch,
    HeartbeatPolicy,
    Ping,
    Pong,
    Reauthenticate,
    Subscribe,
    Unsubscribe,
    connection_established,
    error_message,
    parse_client_frame,
    pong,
    request_id_of,
    subscription_ack,
    validate_topic,
)
from .registry import TopicRegistry
from .transport import transport_for

__all__ = [
    "ALL_TOPIC",
    "DEFAULT_RATE_LIMIT",
    "Admission",
    "Codec",
    "EventHandler",
    "PublishHook",
    "WebSocketService",
]

#: Broker channel of ``broadcast(message, topic=None)``: every connection gets it.
ALL_TOPIC = "$all"

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None] | None]

#: Called by :meth:`WebSocketService.broadcast` in the publishing process, before the
#: message goes to the broker (the shim mirrors new producers to legacy clients here).
PublishHook = Callable[[WebSocketMessage, str | None], Awaitable[None]]
#: ``listener(publication, own)``, before a publication's local fan-out; ``own``:
#: this process published it (see :mod:`service.ownership`).
FanoutListener = Callable[[Publication, bool], None]

#: Renders a standardized wire dict for a client that speaks another format; ``None``
#: means "this client does not get this message". Called once per broadcast per codec.
Codec = Callable[[dict[str, Any]], str | None]

_log = structlog.get_logger("service")

#: The rate limit a service gets unless told otherwise (see :class:`RateLimit`).
DEFAULT_RATE_LIMIT = RateLimit()

#: Metadata key under which a connection's authenticated principal is kept.
PRINCIPAL_KEY = "principal"


@dataclass(frozen=True, slots=True)
class Admission:
    """A socket that passed the access rules: its principal and the slots it holds.

    Returned by :meth:`WebSocketService.admit`; hand it to ``connect(admission=...)``,
    which keeps the slots until the connection is gone (or releases them if it
    fails), or give it back with :meth:`WebSocketService.release`. ``expires_at``
    (Unix seconds) is when the service will close the connection because its
    credentials expire (``None``: never; see ``enforce_token_expiry``).
    """

    principal: Any = None
    ip_key: str | None = None
    principal_key: str | None = None
    expires_at: float | None = None


_OPEN = Admission()


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
    - ``max_message_size``: largest inbound frame processed (UTF-8 bytes); what a
      larger one gets is ``message_too_large``: ``"close"`` (default: close 1009)
      or ``"error"`` (an ``error`` reply, the connection stays).
    - ``max_subscriptions``: per connection (more: ``too_many_subscriptions`` error).
    - ``max_topic_length``: longest topic name (charset fixed, see ``validate_topic``).
    - ``rate_limit``: inbound messages per connection (:class:`RateLimit`; excess
      gets ``rate_limited`` errors, persistent excess a 1008 close).
    - ``send_limits``: per-connection send buffer bounds and overflow policy, and
      the cap on what the server's transport holds unsent (``max_transport_bytes``).
    - ``retain``: ``{topic: key field}``; the topic keeps its latest message per
      ``data[key field]`` and a new subscriber gets them right after subscribing.
    - ``close_timeout``: how long a close frame may take before we give up on it.

    Access (each off by default; see ``service/SECURITY.md``):

    - ``authenticate``: ``async (websocket) -> principal | None`` before the
      handshake completes (e.g. :class:`~service.auth.JWTAuthenticator`); refused
      clients get HTTP 403, or close 1008 after a failed first ``auth`` message.
    - ``authorize``: ``(principal, topic, action) -> bool`` (sync or async) before
      every subscription; a refusal is a ``forbidden`` error, the connection stays.
    - ``allowed_origins``: exact browser origins allowed to connect (others: 403);
      ``allow_missing_origin`` admits clients that send no ``Origin`` (non-browsers).
    - ``max_connections_per_principal`` / ``max_connections_per_ip``: live
      connections per key (more: 403, or 1008 ``too many connections``);
      ``principal_key`` maps a principal to its key (default: claim ``sub``).
    - ``enforce_token_expiry`` (default ``True``; applies with ``authenticate``):
      close a connection with 1008 ``token expired`` when its credentials expire
      (``authenticate.expires_at(principal)``, else the principal's ``exp`` claim),
      unless the client sent a fresh token of the same principal in an ``auth``
      message before (see :meth:`reauthenticate`).
    """

    def __init__(
        self,
        *,
        broker: Broker | str = "memory://",
        heartbeat_interval: float | None = 30.0,
        heartbeat_timeout: float = 10.0,
        max_message_size: int | None = 64 * 1024,
        message_too_large: OversizePolicy | str = OversizePolicy.CLOSE,
        max_subscriptions: int | None = 128,
        max_topic_length: int = DEFAULT_MAX_TOPIC_LENGTH,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        send_limits: SendLimits | None = None,
        retain: Mapping[str, str] | None = None,
        close_timeout: float = 2.0,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        allowed_origins: Iterable[str] | None = None,
        allow_missing_origin: bool = True,
        max_connections_per_principal: int | None = None,
        max_connections_per_ip: int | None = None,
        principal_key: Callable[[Any], str] = default_principal_key,
        enforce_token_expiry: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker: Broker = from_url(broker) if isinstance(broker, str) else broker
        self.heartbeat = (
            None
            if heartbeat_interval is None
            else HeartbeatPolicy(heartbeat_interval, heartbeat_timeout)
        )
        if max_message_size is not None and max_message_size < 1:
            raise ValueError("max_message_size must be positive (or None)")
        if max_topic_length < 1:
            raise ValueError("max_topic_length must be positive")
        self.max_message_size = max_message_size
        self.message_too_large = OversizePolicy(message_too_large)
        self.max_subscriptions = max_subscriptions
        self.max_topic_length = max_topic_length
        self.rate_limit = rate_limit
        self.authenticate = authenticate
        self.authorize = authorize
        self.origin_policy = (
            None
            if allowed_origins is None
            else OriginPolicy.create(allowed_origins, allow_missing=allow_missing_origin)
        )
        self.principal_key = principal_key
        self._per_ip = (
            None if max_connections_per_ip is None else ConnectionCounter(max_connections_per_ip)
        )
        self._per_principal = (
            None
            if max_connections_per_principal is None
            else ConnectionCounter(max_connections_per_principal)
        )
        if self._per_principal is not None and authenticate is None:
            raise ValueError("max_connections_per_principal needs authenticate")
        self._limiters: dict[str, RateLimiter] = {}
        self._admissions: dict[str, Admission] = {}
        self.enforce_token_expiry = enforce_token_expiry
        # Authenticated connections only; nothing on the broadcast path reads it.
        self._deadlines: CredentialDeadlines[Connection] = CredentialDeadlines(
            self._on_token_expired
        )
        self.send_limits = send_limits or SendLimits()
        self.retain: dict[str, str] = dict(retain or {})
        self.close_timeout = close_timeout
        self._clock = clock
        self._connections: dict[str, Connection] = {}
        self._registry: TopicRegistry[Connection] = TopicRegistry()
        self._handlers: dict[MessageType | str, EventHandler] = {}
        self._codecs: dict[str, Codec] = {}
        self._publish_hooks: list[PublishHook] = []
        self._fanout_listeners: list[FanoutListener] = []
        self._own = OwnPublications()
        self._broker_topics: set[str] = set()
        self._broker_lock = asyncio.Lock()
        self._broker_connected = False
        self._started = False
        self._stopping = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._transport_task: asyncio.Task[None] | None = None
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
            "resumes_complete": 0,
            "resumes_incomplete": 0,
            "broker_gaps": 0,
            "closed_too_big": 0,
            "closed_rate_limited": 0,
            "rate_limited": 0,
            "forbidden": 0,
            "refused_origin": 0,
            "refused_auth": 0,
            "refused_limit": 0,
            "closed_token_expired": 0,
            "tokens_refreshed": 0,
            "token_refreshes_refused": 0,
            "closed_transport_overflow": 0,
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
        limits = self.send_limits
        if limits.max_transport_bytes is not None and self._transport_task is None:
            self._transport_task = asyncio.get_running_loop().create_task(
                self._transport_loop(limits.transport_check_interval),
                name="websocket-service-transport-cap",
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
        if self._transport_task is not None:
            self._transport_task.cancel()
            self._transport_task = None
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
            self.broker.set_gap_handler(self._on_gap)
            await self.broker.connect(self._on_publication)
            self._broker_connected = True

    # -- access --------------------------------------------------------------------

    @property
    def _guarded(self) -> bool:
        return (
            self.origin_policy is not None
            or self.authenticate is not None
            or self._per_ip is not None
        )

    async def admit(
        self, websocket: Any, *, subprotocol: str | None = None, close: bool = True
    ) -> Admission:
        """Run the access rules for a new socket; return its :class:`Admission`.

        In order: the ``Origin`` allow-list, connections per client IP,
        authentication (the handshake's credentials, then, if the authenticator
        takes one, a first ``auth`` message: the handshake is completed with
        ``subprotocol`` to read it) and connections per principal. On refusal
        ConnectionRefused is raised (``code``: 1008, or 1011 if the authenticator
        itself failed) and no slot is kept; with ``close`` the socket has been
        closed with that code (HTTP 403 while the handshake is open), without it
        the caller closes it (in Starlette: ``raise WebSocketException(code, reason)``).
        Costs nothing when no rule is configured.
        """
        if not self._guarded:
            return _OPEN
        handshake = Handshake.of(websocket)
        ip_key: str | None = None
        try:
            if self.origin_policy is not None:
                reason = self.origin_policy.check(handshake.headers.get("origin", ()))
                if reason is not None:
                    self._counters["refused_origin"] += 1
                    raise ConnectionRefused(reason)
            if self._per_ip is not None:
                key = handshake.client_host or "unknown"
                if not self._per_ip.acquire(key):
                    self._counters["refused_limit"] += 1
                    raise ConnectionRefused("too many connections")
                ip_key = key
            principal = None
            principal_key = None
            expires_at = None
            if self.authenticate is not None:
                principal = await self._authenticate(self.authenticate, websocket, subprotocol)
                expires_at = self._expiry_of(principal)
                if self._per_principal is not None:
                    key = self.principal_key(principal)
                    if not self._per_principal.acquire(key):
                        self._counters["refused_limit"] += 1
                        raise ConnectionRefused("too many connections")
                    principal_key = key
        except ConnectionRefused as refusal:
            if ip_key is not None and self._per_ip is not None:
                self._per_ip.release(ip_key)
            await self._refuse(websocket, handshake, refusal, close=close)
            raise
        except BaseException:
            if ip_key is not None and self._per_ip is not None:
                self._per_ip.release(ip_key)
            raise
        return Admission(principal, ip_key, principal_key, expires_at)

    def _expiry_of(self, principal: Any) -> float | None:
        """When ``principal``'s credentials expire, if this service enforces it.

        Raises ConnectionRefused (1011) when the authenticator's hook fails.
        """
        if not self.enforce_token_expiry:
            return None
        try:
            return credentials_expiry(self.authenticate, principal)
        except Exception as exc:
            self._counters["refused_auth"] += 1
            _log.exception("authenticator_failed", error=type(exc).__name__)
            raise ConnectionRefused(
                "authentication unavailable", code=CloseCode.INTERNAL_ERROR
            ) from None

    async def _authenticate(
        self, authenticate: Authenticate, websocket: Any, subprotocol: str | None
    ) -> Any:
        try:
            principal = await authenticate(websocket)
            if principal is not None:
                return principal
            receive = getattr(websocket, "receive_text", None)
            if (
                not isinstance(authenticate, FirstMessageAuthenticator)
                or authenticate.message_timeout is None
                or receive is None
            ):
                raise AuthenticationFailed("authentication required")
            timeout = authenticate.message_timeout
            await _accept_if_needed(websocket, subprotocol)
            try:
                async with asyncio.timeout(timeout):
                    text = await receive()
            except TimeoutError:
                raise AuthenticationFailed("authentication timeout") from None
            except Exception:  # gone, or a binary frame
                raise AuthenticationFailed("expected an auth message") from None
            principal = await authenticate.authenticate_message(websocket, text)
            if principal is None:
                raise AuthenticationFailed("authentication failed")
            return principal
        except ConnectionRefused:
            self._counters["refused_auth"] += 1
            raise
        except Exception as exc:
            # An authenticator bug or its backend being down is our failure, not the
            # client's: 1011 tells it to retry later.
            self._counters["refused_auth"] += 1
            _log.exception("authenticator_failed", error=type(exc).__name__)
            raise ConnectionRefused(
                "authentication unavailable", code=CloseCode.INTERNAL_ERROR
            ) from None

    async def _refuse(
        self, websocket: Any, handshake: Handshake, refusal: ConnectionRefused, *, close: bool
    ) -> None:
        _log.info(
            "connection_refused",
            reason=refusal.reason,
            close_code=refusal.code,
            client=handshake.client_host,
            path=handshake.path,
        )
        closer = getattr(websocket, "close", None) if close else None
        if closer is None:
            return
        # Before accept() Starlette turns this close into an HTTP 403 response.
        with suppress(Exception):
            await asyncio.wait_for(
                closer(code=refusal.code, reason=refusal.reason), self.close_timeout
            )

    def release(self, admission: Admission) -> None:
        """Give back the connection slots of an admission that will not be connected."""
        if admission.ip_key is not None and self._per_ip is not None:
            self._per_ip.release(admission.ip_key)
        if admission.principal_key is not None and self._per_principal is not None:
            self._per_principal.release(admission.principal_key)

    def principal(self, connection_id: str) -> Any:
        """The authenticated principal of a connection (``None`` without authentication).

        Also in ``connection(connection_id).metadata["principal"]``; it is never
        sent to the client nor logged. Raises UnknownConnection.
        """
        self.connection(connection_id)
        admission = self._admissions.get(connection_id)
        return None if admission is None else admission.principal

    # -- credentials that expire -----------------------------------------------------

    def expires_at(self, connection_id: str) -> float | None:
        """When the service closes the connection because its credentials expire.

        Unix seconds; ``None`` when it never will (no authentication, credentials
        without expiry, or ``enforce_token_expiry=False``). Raises UnknownConnection.
        """
        self.connection(connection_id)
        return self._deadlines.expires_at(connection_id)

    async def reauthenticate(
        self, connection_id: str, text: str, *, request_id: str | None = None
    ) -> WebSocketMessage | None:
        """Verify the fresh token of an ``auth`` message ``text`` for an open connection.

        :meth:`handle_message` calls this for the client's ``auth`` messages; a
        front end that reads the socket itself (the shim) calls it directly. The
        token is verified as a first ``auth`` message would be
        (``authenticate.authenticate_message``) and must belong to the same
        principal key (``principal_key``) as the connection's. Then the new
        principal replaces the old one (``authorize`` sees it), the expiry timer
        moves to the new credentials' expiry, and the reply to send is returned:
        ``connection_established`` again, with the same ``connection_id``, the new
        ``expires_at`` and ``request_id`` as ``id``.

        Raises ProtocolError and leaves the connection and its deadline as they
        were: ``invalid_token`` (its message says why: ``token expired``,
        ``invalid token``, ...), ``principal_mismatch``, ``unknown_type`` (this
        service takes no ``auth`` messages) or ``handler_error`` (the authenticator
        itself failed: retry later). Returns ``None``, with nothing to send, when
        the connection's credentials had already expired (it has been closed with
        1008 ``token expired``) or it went away meanwhile. Raises UnknownConnection.
        """
        connection = self.connection(connection_id)
        if self._expire_if_due(connection):
            return None
        websocket = self._deadlines.websocket(connection_id)
        admission = self._admissions.get(connection_id)
        verify = getattr(self.authenticate, "authenticate_message", None)
        if websocket is None or admission is None or verify is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                "this service does not accept 'auth' messages",
                request_id=request_id,
            )
        try:
            principal = await verify(websocket, text)
            if principal is None:
                raise AuthenticationFailed("authentication failed")
            if self.principal_key(principal) != self.principal_key(admission.principal):
                raise ProtocolError(
                    ErrorCode.PRINCIPAL_MISMATCH,
                    "the token belongs to another principal",
                    request_id=request_id,
                )
            expires_at = (
                credentials_expiry(self.authenticate, principal)
                if self.enforce_token_expiry
                else None
            )
        except ProtocolError:
            self._counters["token_refreshes_refused"] += 1
            raise
        except ConnectionRefused as refusal:
            self._counters["token_refreshes_refused"] += 1
            raise ProtocolError(
                ErrorCode.INVALID_TOKEN, refusal.reason, request_id=request_id
            ) from None
        except Exception as exc:
            self._counters["token_refreshes_refused"] += 1
            _log.exception("authenticator_failed", error=type(exc).__name__)
            raise ProtocolError(
                ErrorCode.HANDLER_ERROR,
                "the authenticator failed; retry later",
                request_id=request_id,
            ) from None
        if self._connections.get(connection_id) is not connection:
            return None  # expired or gone while the authenticator ran
        self._admissions[connection_id] = replace(
            admission, principal=principal, expires_at=expires_at
        )
        connection.metadata[PRINCIPAL_KEY] = principal
        self._deadlines.move(connection_id, expires_at)
        self._counters["tokens_refreshed"] += 1
        _log.info("token_refreshed", connection_id=connection_id, expires_at=expires_at)
        return connection_established(
            connection_id,
            heartbeat_interval=self.heartbeat.interval
            if self.heartbeat is not None and connection.heartbeat
            else None,
            metadata={k: v for k, v in connection.metadata.items() if k != PRINCIPAL_KEY},
            expires_at=expires_at,
            request_id=request_id,
        )

    def _expire_if_due(self, connection: Connection) -> bool:
        """Close ``connection`` now if its credentials have expired; True if so.

        The timer does this at the deadline; this covers a frame that reaches
        the service in the same loop iteration, before the timer ran.
        """
        if not self._deadlines.is_due(connection.connection_id):
            return False
        self._on_token_expired(connection)
        return True

    def _on_token_expired(self, connection: Connection) -> None:
        # A timer callback: the close itself runs in a task, as a heartbeat timeout's.
        if self._connections.get(connection.connection_id) is not connection:
            return
        self._counters["closed_token_expired"] += 1
        _log.info("token_expired", connection_id=connection.connection_id)
        self._forget(connection)
        self._spawn(self._close_forgotten(connection, CloseCode.POLICY_VIOLATION, "token expired"))

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
        admission: Admission | None = None,
        transport: Transport | None = None,
        accepts: Callable[[str], bool] | None = None,
    ) -> str:
        """Register a socket and return its new connection id.

        ``accepts`` makes it a :class:`~service.connection.FeedConnection`: the
        service's frames for it pass that filter, and another sender (the
        migration shim's legacy side) feeds the same bounded writer.

        ``transport`` sends the frames when given (``websocket`` is then only
        accepted, checked and closed). Without it, a socket that
        ``DirectSendMiddleware`` or ``ServiceEndpoint`` prepared is written through
        uvicorn's direct path (:func:`service.transport.transport_for`), so the
        guide's own endpoint gets the same fast broadcasts as ``serve()``.

        Runs the access rules first (:meth:`admit`) unless ``admission`` says they
        already ran. Accepts the socket when it has an ``accept`` coroutine and is
        not yet accepted (pass ``accept=False`` if the caller accepted it), then sends
        ``connection_established`` carrying the id (``announce=False`` skips it, for
        clients that do not speak the new protocol). ``codec`` names a format
        registered with :meth:`register_codec` for clients that expect another
        payload shape; ``heartbeat=False`` exempts the connection from heartbeats
        (its client would not answer them). Raises ServiceStopped while stopping
        and ConnectionRefused when an access rule refused the socket (it is closed).
        """
        if self._stopping:
            raise ServiceStopped("the service is stopping; no new connections")
        if codec is not None and codec not in self._codecs:
            raise ValueError(f"unknown codec {codec!r}; register it first")
        if admission is None:
            admission = await self.admit(websocket, subprotocol=subprotocol)
        try:
            if self._stopping:  # it stopped while the access rules ran (first message)
                with suppress(Exception):
                    await asyncio.wait_for(
                        websocket.close(CloseCode.GOING_AWAY, "server shutting down"),
                        self.close_timeout,
                    )
                raise ServiceStopped("the service is stopping; no new connections")
            await self._ensure_broker()
            if accept:
                await _accept_if_needed(websocket, subprotocol)
        except BaseException:
            self.release(admission)
            raise
        forget_handshake(getattr(websocket, "scope", None))
        connection_id = uuid.uuid4().hex
        public = dict(metadata or {})
        private = public
        if admission.principal is not None:
            private = {**public, PRINCIPAL_KEY: admission.principal}
        options: dict[str, Any] = {
            "metadata": private,
            "limits": self.send_limits,
            "on_dead": self._on_dead,
            "last_seen": self._clock(),
            "codec": codec,
            "heartbeat": heartbeat and self.heartbeat is not None,
        }
        sender = transport_for(websocket) if transport is None else transport
        connection = (
            Connection(connection_id, sender, **options)
            if accepts is None
            else FeedConnection(connection_id, sender, accepts=accepts, **options)
        )
        self._connections[connection_id] = connection
        if admission is not _OPEN:
            self._admissions[connection_id] = admission
            if admission.principal is not None:
                self._deadlines.track(connection_id, connection, websocket, admission.expires_at)
        if self.rate_limit is not None:
            self._limiters[connection_id] = RateLimiter(self.rate_limit, now=self._clock())
        self._counters["connections_total"] += 1
        await self._ensure_all_topic()
        if announce:
            self._send_to(
                connection,
                connection_established(
                    connection_id,
                    heartbeat_interval=self.heartbeat.interval if self.heartbeat else None,
                    metadata=public,
                    expires_at=admission.expires_at,
                ),
            )
        _log.debug("connected", connection_id=connection_id, metadata=public)
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
        self._limiters.pop(connection.connection_id, None)
        admission = self._admissions.pop(connection.connection_id, None)
        if admission is not None:
            self.release(admission)
        self._deadlines.forget(connection.connection_id)
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
        UnknownConnection, or ProtocolError for an invalid topic, a topic the
        connection's principal may not subscribe to (``forbidden``: ``authorize``
        applies to server-side subscriptions too) or too many subscriptions.
        """
        connection = self.connection(connection_id)
        topic = validate_topic(topic, max_length=self.max_topic_length)
        await self._subscribe(connection, topic, ack=None)

    async def check_access(
        self,
        connection_id: str,
        topic: str,
        action: str = "subscribe",
        *,
        request_id: str | None = None,
    ) -> None:
        """Raise ProtocolError ``forbidden`` unless ``authorize`` allows ``action`` on ``topic``.

        Every path that starts delivering a topic to a connection (subscribe, and
        any resume/replay of its history) must call this first. An ``authorize``
        that raises counts as a refusal (fail closed). Raises UnknownConnection.
        """
        connection = self.connection(connection_id)
        await self._check_access(connection, topic, action, request_id)

    async def _check_access(
        self, connection: Connection, topic: str, action: str, request_id: str | None
    ) -> None:
        if self.authorize is None:
            return
        admission = self._admissions.get(connection.connection_id)
        principal = None if admission is None else admission.principal
        try:
            allowed = self.authorize(principal, topic, action)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception:
            _log.exception("authorize_failed", topic=topic, action=action)
            allowed = False
        if allowed is not True:
            self._counters["forbidden"] += 1
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"not allowed to {action} {topic!r}", request_id=request_id
            )

    async def _subscribe(
        self, connection: Connection, topic: str, *, ack: Subscribe | None
    ) -> None:
        cid = connection.connection_id
        await self._check_access(
            connection, topic, "subscribe", None if ack is None else ack.request_id
        )
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
        # The connection holds its deliveries from the moment it joins the topic
        # until the ack and any replay are queued in front of them: live messages
        # published while the broker answers wait behind the replay instead of
        # slipping past it, and those the replay already covers are dropped.
        connection.hold()
        first: list[str] = []
        floor: tuple[str, int] | None = None
        try:
            async with self._broker_lock:
                if topic not in self._broker_topics:
                    await self.broker.subscribe(topic)
                    self._broker_topics.add(topic)
                if connection.closed or cid not in self._connections:
                    return
                self._registry.subscribe(cid, connection, topic)
            recovered: bool | None = None
            missed: Sequence[Publication] = ()
            if ack is not None and ack.resume is not None:
                history = await self.broker.history(
                    topic, epoch=ack.resume[0], since_seq=ack.resume[1]
                )
                recovered, missed = history.complete, history.publications
                epoch, seq = history.epoch, history.seq
                self._counters["resumes_complete" if recovered else "resumes_incomplete"] += 1
            else:
                epoch, seq = await self.broker.position(topic)
            floor = (epoch, seq)
            retained = (
                await self.broker.last_values(topic)
                if topic in self.retain and not recovered
                else []
            )
            frames = [
                _Frame(with_sequence(p.payload, p.seq, p.epoch).decode())
                for p in (*missed, *retained)
            ]
            if ack is not None:
                ack_message = subscription_ack(ack, seq=seq, epoch=epoch, recovered=recovered)
                frames.insert(0, _Frame(encode(ack_message).decode()))
            first = [text for frame in frames if (text := self._text_for(connection, frame))]
        finally:
            connection.release(first, keep=None if floor is None else _newer_than(topic, floor))

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

    def _text_for(self, connection: Connection, frame: _Frame) -> str | None:
        if connection.codec is None:
            return frame.standard
        return frame.render(connection.codec, self._codecs)

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
            validate_topic(topic, max_length=self.max_topic_length)
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
                _log.exception("publish_hook_failed", type=type_name(message.type), topic=topic)
        await self._ensure_broker()
        recipients = (
            len(self._connections) if topic is None else len(self._registry.subscribers(topic))
        )
        noted = bool(self._fanout_listeners) and channel in self._broker_topics
        if noted:
            self._own.expect(payload)  # its echo is this process's own publication
        try:
            await self.broker.publish(channel, payload, retain_key=retain_key)
        except BaseException:
            if noted:
                self._own.forget(payload)
            raise
        self._counters["messages_published"] += 1
        return recipients

    async def forget_retained(self, topic: str, key: str) -> None:
        """Stop retaining ``topic``'s last value for ``key`` (see ``retain``).

        New subscribers no longer get it; call it when the thing ``key`` names is
        gone (an evicted session), so retained values stay bounded. Raises
        BrokerUnavailable when the broker is down.
        """
        validate_topic(topic, max_length=self.max_topic_length)
        await self.broker.forget_value(topic, key)

    def deliver_local(self, message: WebSocketMessage, topic: str | None = None) -> int:
        """Hand ``message`` to this process's subscribers of ``topic`` only.

        For events every worker produces for its own clients (a loop each process
        runs): published through the broker they would reach each client once per
        worker. Encoded once like :meth:`broadcast`, but without a broker position
        (no ``seq``, no history: a resume cannot replay it) and without publish
        hooks or fan-out listeners. Returns the number of recipients.
        """
        if topic is not None:
            validate_topic(topic, max_length=self.max_topic_length)
        if message.topic != topic or message.seq is not None or message.epoch is not None:
            message = message.model_copy(update={"topic": topic, "seq": None, "epoch": None})
        return self._fan_out(ALL_TOPIC if topic is None else topic, encode(message).decode())

    def _on_publication(self, publication: Publication) -> None:
        """The broker's handler: fan-out listeners, then the one fan-out loop."""
        if self._fanout_listeners:
            own = self._own.take(publication.payload)
            for listener in self._fanout_listeners:
                try:
                    listener(publication, own)
                except Exception:
                    _log.exception("fanout_listener_failed", topic=publication.topic)
        text = with_sequence(publication.payload, publication.seq, publication.epoch).decode()
        self._fan_out(publication.topic, text)

    def _fan_out(self, topic: str, text: str) -> int:
        if topic == ALL_TOPIC:
            recipients: Collection[Connection] = self._connections.values()
        else:
            recipients = self._registry.subscribers(topic).values()
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
        return len(recipients)

    def _on_gap(self, topic: str) -> None:
        """The broker lost publications of ``topic`` it cannot replay: say so to subscribers."""
        self._counters["broker_gaps"] += 1
        self._spawn(self._announce_gap(topic))

    async def _announce_gap(self, topic: str) -> None:
        # The same notice a resume that cannot be served gets: ``subscribed`` with
        # ``recovered: false`` and the topic's position, then its last values.
        try:
            epoch, seq = await self.broker.position(topic)
            retained = await self.broker.last_values(topic) if topic in self.retain else []
        except Exception:
            _log.warning("gap_notice_failed", topic=topic)
            return
        notice = WebSocketMessage(
            type=MessageType.SUBSCRIBED,
            data={
                "topic": topic,
                "seq": seq,
                "epoch": epoch,
                "recovered": False,
                "reason": "the broker lost messages it cannot replay",
            },
        )
        frame = _Frame(encode(notice).decode())
        for connection in list(self._registry.subscribers(topic).values()):
            self._deliver_frame(connection, frame)
            for publication in retained:
                self._deliver_one(connection, publication)
        _log.warning("gap_announced", topic=topic, seq=seq, epoch=epoch)

    # -- inbound -------------------------------------------------------------------

    def register_event_handler(
        self, message_type: MessageType | str, handler: EventHandler
    ) -> None:
        """Call ``handler(connection_id, data)`` for inbound messages of ``message_type``.

        The handler may be sync or async. One handler per type; registering again
        replaces it. Protocol types (subscribe, ping, ...) are handled by the service.
        """
        self._handlers[coerce_type(message_type)] = handler

    def add_publish_hook(self, hook: PublishHook) -> Callable[[], None]:
        """Run ``hook(message, topic)`` on every broadcast made in this process.

        A hook that raises is logged and skipped; it never stops the broadcast.
        Returns a function that removes the hook.
        """
        self._publish_hooks.append(hook)
        return lambda: self._publish_hooks.remove(hook)

    def add_fanout_listener(self, listener: FanoutListener) -> Callable[[], None]:
        """Run ``listener(publication, own)`` on every publication this process
        receives from the broker, before its local fan-out, in the broker's task.

        Every worker's listener sees every publication of the topics it follows
        (``own`` is True in the worker that published it), so per-process work
        runs exactly once per event and worker. A listener must not block; one
        that raises is logged and skipped. Returns a function that removes it.
        """
        self._fanout_listeners.append(listener)
        return lambda: self._fanout_listeners.remove(listener)

    def register_codec(self, name: str, codec: Codec) -> None:
        """Register a wire format for clients that do not speak the envelope."""
        self._codecs[name] = codec

    async def screen_frame(
        self, connection_id: str, data: str | bytes
    ) -> tuple[bool, WebSocketMessage | None]:
        """The rules every inbound frame passes, for frames the service does not parse.

        Returns ``(process, reply)``: ``process`` is False when the frame must be
        dropped, with ``reply`` the ``error`` to send the client, if any. As in
        :meth:`handle_message`: an expired token closes 1008, persistent excess
        over the rate limit closes 1008 (``rate_limited`` below that), and a frame
        over ``max_message_size`` closes 1009 under the ``"close"`` policy
        (``message_too_large`` under ``"error"``). The migration shim runs this on
        every frame an endpoint receives, at every stage. Raises UnknownConnection.
        """
        connection = self.connection(connection_id)
        if self._deadlines and self._expire_if_due(connection):
            return False, None
        now = connection.last_seen = self._clock()
        self._counters["messages_received"] += 1
        limiter = self._limiters.get(connection_id)
        if limiter is not None:
            verdict = limiter.check(now)
            if verdict is RateVerdict.CLOSE:
                await self._rate_limited(connection, verdict, data)
                return False, None
            if verdict is not RateVerdict.ALLOW:
                self._counters["rate_limited"] += 1
                error = ProtocolError(ErrorCode.RATE_LIMITED, "too many messages; slow down")
                return False, error_message(error)
        limit = self.max_message_size
        if limit is not None and len(data) > limit:
            if self.message_too_large is OversizePolicy.CLOSE:
                self._counters["closed_too_big"] += 1
                await self.disconnect(
                    connection_id, code=CloseCode.MESSAGE_TOO_BIG, reason="message too big"
                )
                return False, None
            self._counters["errors_sent"] += 1
            error = ProtocolError(
                ErrorCode.MESSAGE_TOO_LARGE, f"message exceeds the limit of {limit} bytes"
            )
            return False, error_message(error)
        return True, None

    async def handle_message(self, connection_id: str, data: str | bytes) -> None:
        """Process one inbound frame of ``connection_id`` (the client protocol).

        Bad input is answered with an ``error`` message carrying a ``code``; the
        connection stays open, except: a frame over ``max_message_size`` closes it
        with 1009 under the ``"close"`` policy, persistent excess over the rate
        limit closes it with 1008, and so does any frame after its token expired
        (1008 ``token expired``). An ``auth`` message refreshes the token (see
        :meth:`reauthenticate`). Raises UnknownConnection for an unregistered id.
        """
        connection = self.connection(connection_id)
        if self._deadlines and self._expire_if_due(connection):
            return  # its token expired: closed with 1008, the frame is not processed
        now = connection.last_seen = self._clock()
        self._counters["messages_received"] += 1
        limiter = self._limiters.get(connection_id)
        if limiter is not None:
            verdict = limiter.check(now)
            if verdict is not RateVerdict.ALLOW:
                await self._rate_limited(connection, verdict, data)
                return
        try:
            if isinstance(data, bytes | bytearray):
                if self.max_message_size is not None and len(data) > self.max_message_size:
                    raise ProtocolError(
                        ErrorCode.MESSAGE_TOO_LARGE,
                        f"message exceeds the limit of {self.max_message_size} bytes",
                    )
                raise ProtocolError(
                    ErrorCode.BINARY_NOT_SUPPORTED, "send JSON as text frames, not binary"
                )
            event = parse_client_frame(
                data, max_size=self.max_message_size, max_topic_length=self.max_topic_length
            )
            if isinstance(event, Subscribe):
                await self._subscribe(connection, event.topic, ack=event)
            elif isinstance(event, Unsubscribe):
                self._registry.unsubscribe(connection_id, event.topic)
                self._send_to(connection, subscription_ack(event))
                await self._reconcile_broker()
            elif isinstance(event, Ping):
                self._send_to(connection, pong(event))
            elif isinstance(event, Reauthenticate):
                reply = await self.reauthenticate(connection_id, data, request_id=event.request_id)
                if reply is not None:
                    self._send_to(connection, reply)
            elif isinstance(event, Pong):
                pass
            else:
                await self._dispatch(connection, event)
        except ProtocolError as error:
            if (
                error.code is ErrorCode.MESSAGE_TOO_LARGE
                and self.message_too_large is OversizePolicy.CLOSE
            ):
                self._counters["closed_too_big"] += 1
                _log.info("message_too_big", connection_id=connection_id, size=len(data))
                await self.disconnect(
                    connection_id, code=CloseCode.MESSAGE_TOO_BIG, reason="message too big"
                )
                return
            self._counters["errors_sent"] += 1
            _log.info(
                "client_error",
                connection_id=connection_id,
                code=error.code.value,
                detail=error.detail,
            )
            self._send_to(connection, error_message(error))

    async def _rate_limited(
        self, connection: Connection, verdict: RateVerdict, data: str | bytes
    ) -> None:
        cid = connection.connection_id
        if verdict is RateVerdict.CLOSE:
            self._counters["closed_rate_limited"] += 1
            _log.info("rate_limit_abuse", connection_id=cid)
            await self.disconnect(
                cid, code=CloseCode.POLICY_VIOLATION, reason="rate limit exceeded"
            )
            return
        self._counters["rate_limited"] += 1
        request_id = request_id_of(data, max_size=self.max_message_size)
        self._send_to(
            connection,
            error_message(
                ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    "too many messages; slow down",
                    request_id=request_id,
                )
            ),
        )

    async def _dispatch(self, connection: Connection, event: Dispatch) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                f"no handler for message type {type_name(event.type)!r}",
                request_id=event.request_id,
            )
        try:
            result = handler(connection.connection_id, event.data)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._counters["handler_errors"] += 1
            _log.exception(
                "handler_failed", connection_id=connection.connection_id, type=type_name(event.type)
            )
            raise ProtocolError(
                ErrorCode.HANDLER_ERROR,
                f"the handler for {type_name(event.type)!r} failed: {type(exc).__name__}",
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

    async def _transport_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_transports()
            except Exception:  # a broken transport must not end the check for all
                _log.exception("transport_check_failed")

    def check_transports(self) -> list[str]:
        """Abort every connection whose server transport holds more than the cap unsent.

        The cap is ``send_limits.max_transport_bytes``; the bytes are the server's
        own write buffer (the transport's ``write_buffer_size()``), which the
        service's queue never sees: uvicorn writes a pong there for every ping,
        whether or not the client reads. Such a client cannot take a close frame,
        so its TCP connection is reset at once. Called every
        ``send_limits.transport_check_interval`` by ``start()``'s task (a pass over
        the connections, never per broadcast); returns the ids it aborted.
        """
        cap = self.send_limits.max_transport_bytes
        if cap is None:
            return []
        over: list[tuple[Connection, int]] = []
        for connection in self._connections.values():
            probe = getattr(connection.transport, "write_buffer_size", None)
            if probe is not None and (buffered := probe()) > cap:
                over.append((connection, buffered))
        for connection, buffered in over:
            self._counters["closed_transport_overflow"] += 1
            _log.warning(
                "transport_overflow",
                connection_id=connection.connection_id,
                buffered=buffered,
                cap=cap,
            )
            self._forget(connection)
            connection.closed = True
            connection.cancel_writer()
            abort = getattr(connection.transport, "abort", None)
            if abort is not None:
                with suppress(Exception):
                    abort()
        if over:
            self._spawn(self._reconcile_broker())
        return [connection.connection_id for connection, _ in over]

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


def _newer_than(topic: str, floor: tuple[str, int]) -> Callable[[str], bool]:
    """A filter for held texts: drop ``topic``'s frames at or below ``floor`` (epoch, seq)."""
    epoch, seq = floor

    def keep(text: str) -> bool:
        try:
            wire = orjson.loads(text)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(wire, dict) or wire.get("topic") != topic:
            return True
        frame_seq = wire.get("seq")
        return not (wire.get("epoch") == epoch and isinstance(frame_seq, int) and frame_seq <= seq)

    return keep


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
