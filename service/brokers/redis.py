"""The Redis broker: every process that uses the same Redis and prefix shares topics.

Layout in Redis (``{topic}`` is literal: a Cluster hash tag, so the keys of one
topic share a slot and one Lua script may touch them all)::

    {prefix}:epoch:{topic}    string  random token; a new token means "history lost"
    {prefix}:seq:{topic}      string  last seq assigned (INCR), created with the epoch
    {prefix}:history:{topic}  stream  one entry per publication, fields s=seq p=payload,
                                      MAXLEN ~ history_size; the entry id gives its age
    {prefix}:retain:{topic}   hash    retain key -> packed publication
    {prefix}:channel:{topic}  pub/sub channel of packed publications

A packed publication is ``b"<seq>:<epoch>:" + payload`` (seq in decimal). It
carries its epoch, so a subscriber never pairs a seq with a stale epoch.

Every write is one Lua script (EVALSHA, EVAL when Redis lost the script cache),
so seq, history, retained value and the PUBLISH happen together or not at all.
The epoch and the seq counter are created together on a topic's first use; if
either disappears (a restarted Redis without persistence, FLUSHDB, eviction) the
next call starts a new epoch with an empty history and no retained values, which
is what a restarted :class:`~service.brokers.MemoryBroker` does. The only repair
is the seq counter alone going missing while its epoch and history survive: the
last history entry restores it.

Subscriptions use one pub/sub connection per broker, read by one task that calls
the handler in the order Redis delivered (that is seq order, per topic). When
that connection drops the task reconnects with jittered exponential backoff and
resubscribes; publications made in between reach no handler but stay in the
history. Delivery is asynchronous: ``publish`` returns when Redis has stored and
published the message, and handlers (this process's too) get it a moment later.

Because of that, ``history`` and ``position`` of a subscribed topic wait for the
subscriber connection to catch up before they return: a PING sent on it after
the script ran is answered behind every publication the script saw, so when its
PONG is read each of them has reached the handler. A caller that holds live
deliveries while it asks (the hub, setting up a resume) can then drop those the
answer covers; without the wait, the last replayed message could arrive live
once more just after the replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import secrets
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import BrokerError, BrokerUnavailable
from .base import Broker, History, Publication, PublicationHandler

__all__ = ["RedisBroker"]

_T = TypeVar("_T")

# Errors that mean "Redis cannot serve us right now" (asyncio's TimeoutError is an OSError).
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

# With maintenance notifications on (recent redis-py's default under RESP3) the pool
# skips its check for connections the server closed, so the first command after a
# Redis restart would fail on a dead pooled connection. Older redis-py has none.
_NO_MAINT_NOTIFICATIONS: dict[str, Any] = {}
with suppress(ImportError):
    from redis.maint_notifications import MaintNotificationsConfig

    _NO_MAINT_NOTIFICATIONS["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)

# The keys of one topic, in the order the scripts' KEYS use them.
_KINDS = ("epoch", "seq", "history", "retain")


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        source = _STATE + body
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


# KEYS: epoch, seq, history, retain. Returns the topic's epoch and last seq.
_STATE = """
local function state(token)
  local epoch = redis.call('GET', KEYS[1])
  local seq = redis.call('GET', KEYS[2])
  if epoch and seq then
    return epoch, tonumber(seq)
  end
  if epoch then
    -- Only the counter is gone: the newest history entry still knows it.
    local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
    if last then
      redis.call('SET', KEYS[2], last[2][2])
      return epoch, tonumber(last[2][2])
    end
  end
  -- First use, or the topic's state is gone: a new epoch with nothing in it.
  redis.call('SET', KEYS[1], token)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3], KEYS[4])
  return token, 0
end
"""

# ARGV: new epoch token, payload, history size, channel[, retain key]. Returns seq.
_PUBLISH = _Script.of("""
local epoch = state(ARGV[1])
local seq = redis.call('INCR', KEYS[2])
local packed = string.format('%d:%s:', seq, epoch) .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 's', seq, 'p', ARGV[2])
end
if ARGV[5] then
  redis.call('HSET', KEYS[4], ARGV[5], packed)
end
redis.call('PUBLISH', ARGV[4], packed)
return seq
""")

# ARGV: new epoch token, wanted epoch, since seq, history size.
# Returns {epoch, seq, now in ms, entries newest first (only when they may suffice)}.
_HISTORY = _Script.of("""
local epoch, seq = state(ARGV[1])
local need = seq - tonumber(ARGV[3])
local entries = {}
if epoch == ARGV[2] and need > 0 and need <= tonumber(ARGV[4]) then
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', need)
end
local now = redis.call('TIME')
return {epoch, seq, now[1] * 1000 + math.floor(now[2] / 1000), entries}
""")

# ARGV: new epoch token. Returns {epoch, seq}.
_POSITION = _Script.of("""
local epoch, seq = state(ARGV[1])
return {epoch, seq}
""")


class RedisBroker(Broker):
    """Broker over one Redis server, shared by every process on the same ``prefix``.

    ``url`` is a redis-py URL (``redis://``, ``rediss://``, ``unix://``). A
    ``prefix`` query parameter wins over the ``prefix`` argument and is removed
    before the URL reaches redis-py; every key and channel starts with ``{prefix}:``.

    - ``history_size``/``history_ttl``: as for the memory broker; resumes are
      complete only within the last ``history_size`` publications and
      ``history_ttl`` seconds (``0`` size keeps none).
    - ``reconnect_backoff``: ``(first, cap)`` seconds between attempts to restore
      the subscriber connection; jittered, doubling from ``first`` up to ``cap``.
    - ``publish_timeout``: how long one round trip (publish, history, subscribe...)
      may take before it raises :class:`~service.errors.BrokerUnavailable`.
    - ``ping_interval``: an idle subscriber connection is PINGed this often and
      given up after two silent intervals, so a half-open connection does not pass
      for healthy; ``None`` turns it off.

    Raises ValueError for an empty prefix, a prefix with ``{``/``}``, or
    negative sizes and times.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ws",
        history_size: int = 1000,
        history_ttl: float = 300.0,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        publish_timeout: float = 1.0,
        ping_interval: float | None = 5.0,
    ) -> None:
        self._url, prefix = _split_prefix(url, prefix)
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be non-empty and free of braces, got {prefix!r}")
        first, cap = reconnect_backoff
        if history_size < 0 or history_ttl < 0:
            raise ValueError("history_size and history_ttl must be >= 0")
        if not 0 < first <= cap:
            raise ValueError("reconnect_backoff must be (first, cap) with 0 < first <= cap")
        if publish_timeout <= 0 or (ping_interval is not None and ping_interval <= 0):
            raise ValueError("publish_timeout and ping_interval must be > 0")
        self._prefix = prefix
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._backoff = (first, cap)
        self._timeout = publish_timeout
        self._ping_interval = ping_interval
        self._where = _redact(self._url)
        self._log = structlog.get_logger(__name__, broker="redis", redis=self._where)
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handler: PublicationHandler | None = None
        self._wanted: dict[bytes, str] = {}  # channel -> topic, what the handler gets
        self._waiters: dict[bytes, asyncio.Future[bool]] = {}  # SUBSCRIBE awaiting Redis
        self._barriers: dict[bytes, asyncio.Future[bool]] = {}  # PING token -> its PONG
        self._lock = asyncio.Lock()  # one subscription change at a time
        self._healthy = False
        self._reconnects = 0
        self._published = 0
        self._last_error: str | None = None
        self._delivered: dict[str, tuple[str, int]] = {}  # topic -> last (epoch, seq) handed on
        self._held: list[dict[str, Any]] | None = None  # live messages held during catch-up
        self._gaps = 0

    # -- names -------------------------------------------------------------------------

    def _keys(self, topic: str) -> list[str]:
        return [f"{self._prefix}:{kind}:{{{topic}}}" for kind in _KINDS]

    def _channel(self, topic: str) -> bytes:
        return f"{self._prefix}:channel:{{{topic}}}".encode()

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self, handler: PublicationHandler) -> None:
        """Open the subscriber connection, subscribe recorded topics, start the reader.

        Raises BrokerUnavailable (and keeps nothing open) when Redis cannot be
        reached within ``publish_timeout``; calling again retries. Once connected,
        later outages are handled by reconnecting, never by raising here. Calling
        it while connected only replaces the handler.
        """
        self._handler = handler
        async with self._lock:
            if self._reader is not None:
                return
            try:
                self._pubsub = await self._open()
            except Exception as exc:
                self._last_error = _describe(exc)
                await self._close_client()
                error = BrokerUnavailable if isinstance(exc, _UNAVAILABLE) else BrokerError
                raise error(f"cannot reach Redis at {self._where}: {self._last_error}") from exc
            self._healthy = True
            self._reader = asyncio.get_running_loop().create_task(
                self._run(), name="redis-broker-reader"
            )

    async def disconnect(self) -> None:
        """Stop the reader, forget subscriptions, close every connection; idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])
        self._healthy = False
        self._handler = None
        self._wanted.clear()
        self._fail_waiters()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _discard(pubsub)
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with suppress(RedisError, OSError):
                await client.aclose()

    def _commands(self) -> Redis:
        """The command client, created on first use (publish works before connect)."""
        if self._client is None:
            # Blocking: a burst of publishes waits for a free connection (within
            # the timeout) instead of failing once max_connections are busy.
            pool = BlockingConnectionPool.from_url(
                self._url,
                timeout=self._timeout,
                # No retries: a retried publish whose answer was lost would publish
                # twice. Callers get BrokerUnavailable and decide.
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=self._timeout,
                socket_timeout=self._timeout,
                **_NO_MAINT_NOTIFICATIONS,
            )
            self._client = Redis.from_pool(pool)
        return self._client

    # -- subscriptions -----------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Deliver ``topic`` from the moment this returns.

        Returns once Redis confirmed the subscription, so anything published after
        that reaches the handler. Before ``connect`` the topic is only recorded.
        Raises BrokerUnavailable while the subscriber connection is down (the
        topic is then not subscribed).
        """
        channel = self._channel(topic)
        async with self._lock:
            if channel in self._wanted:
                return
            if self._reader is None:
                self._wanted[channel] = topic
                return
            pubsub = self._pubsub
            if pubsub is None or not self._healthy:
                raise BrokerUnavailable(f"Redis at {self._where} is reconnecting")
            self._wanted[channel] = topic
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[channel] = waiter
            try:
                await self._guard(self._on(pubsub, pubsub.subscribe(channel)))
                confirmed = await self._guard(waiter)
            except BaseException:
                self._wanted.pop(channel, None)
                raise
            finally:
                self._waiters.pop(channel, None)
            if not confirmed:
                self._wanted.pop(channel, None)
                raise BrokerUnavailable(f"lost Redis at {self._where} while subscribing")

    async def unsubscribe(self, topic: str) -> None:
        """Stop delivering ``topic`` at once; unknown topics are ignored; never raises.

        If Redis cannot be told right now, the stale server-side subscription is
        filtered out here and dropped with the connection.
        """
        channel = self._channel(topic)
        async with self._lock:
            if self._wanted.pop(channel, None) is None:
                return
            self._delivered.pop(topic, None)
            pubsub = self._pubsub
            if pubsub is not None and self._healthy:
                with suppress(BrokerError):
                    await self._guard(self._on(pubsub, pubsub.unsubscribe(channel)))

    async def _on(self, pubsub: PubSub, command: Awaitable[Any]) -> None:
        """Send ``command`` on ``pubsub``; close it again if the reader replaced it."""
        try:
            await command
        finally:
            # A command on a pubsub the reader already gave up silently opens a new
            # connection on it; nobody would ever read or close that one.
            if pubsub is not self._pubsub:
                await _discard(pubsub)

    # -- the reader --------------------------------------------------------------------

    async def _open(self) -> PubSub:
        """A new subscriber connection with every wanted channel confirmed."""
        pubsub = self._commands().pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.connect()  # type: ignore[no-untyped-call]
                pending = set(self._wanted)
                if pending:
                    await pubsub.subscribe(*pending)
                while pending & self._wanted.keys():
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        pending.discard(message["channel"])
                    self._dispatch(message)
        except BaseException:
            await _discard(pubsub)
            raise
        return pubsub

    async def _run(self) -> None:
        """Read until the connection fails, then restore it; forever, never raising."""
        while True:
            try:
                if self._pubsub is not None:
                    await self._pump(self._pubsub)
            except Exception as exc:
                self._lost(exc)
            await self._recover()

    async def _pump(self, pubsub: PubSub) -> None:
        unanswered = False
        while True:
            message = await pubsub.get_message(timeout=self._ping_interval)
            if message is not None:
                unanswered = False
                self._dispatch(message)
            elif self._ping_interval is not None:
                if unanswered:
                    raise RedisTimeoutError(f"no answer to PING within {self._ping_interval}s")
                unanswered = True
                await self._guard(pubsub.ping())

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("message", "pong") and self._held is not None:
            # Catching up: live messages wait their turn, and a barrier's PONG stays
            # behind the messages it follows.
            self._held.append(message)
            return
        if kind == "message":
            topic = self._wanted.get(message["channel"])
            if topic is None or self._handler is None:
                return  # unsubscribed while the message was on its way
            try:
                publication = _unpack(topic, message["data"])
            except ValueError:
                self._log.error("redis_broker_bad_message", topic=topic)
                return
            self._hand_on(publication)
        elif kind == "subscribe":
            waiter = self._waiters.get(message["channel"])
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
        elif kind == "pong":
            barrier = self._barriers.get(_as_bytes(message["data"] or b""))
            if barrier is not None and not barrier.done():
                barrier.set_result(True)

    def _hand_on(self, publication: Publication) -> None:
        """Give ``publication`` to the handler unless it was handed on already."""
        last = self._delivered.get(publication.topic)
        if last is not None and last[0] == publication.epoch and publication.seq <= last[1]:
            return  # seen during catch-up
        self._delivered[publication.topic] = (publication.epoch, publication.seq)
        if self._handler is None:
            return
        try:
            self._handler(publication)
        except Exception:  # a handler bug must not stop delivery of the rest
            self._log.exception("redis_broker_handler_failed", topic=publication.topic)

    async def _catch_up(self) -> None:
        """After a reconnect: replay from the history what the outage swallowed.

        Live messages that arrive meanwhile are held and handed on afterwards, so
        the order per topic holds and nothing is handed on twice. A topic whose
        history cannot cover the gap goes to the gap handler.
        """
        self._held = []
        try:
            for topic in list(self._wanted.values()):
                last = self._delivered.get(topic)
                if last is None:
                    continue
                try:
                    history = await self.history(topic, epoch=last[0], since_seq=last[1])
                except BrokerError:
                    history = None
                if history is not None and history.complete:
                    for publication in history.publications:
                        self._hand_on(publication)
                    continue
                self._gaps += 1
                self._delivered.pop(topic, None)
                self._log.warning("redis_broker_gap", topic=topic, since=last)
                if self._gap_handler is not None:
                    self._gap_handler(topic)
        finally:
            held, self._held = self._held, None
            for message in held:
                self._dispatch(message)

    def _lost(self, exc: BaseException) -> None:
        self._healthy = False
        self._last_error = _describe(exc)
        self._fail_waiters()
        self._log.warning(
            "redis_broker_disconnected", error=self._last_error, topics=len(self._wanted)
        )

    def _fail_waiters(self) -> None:
        for waiter in (*self._waiters.values(), *self._barriers.values()):
            if not waiter.done():
                waiter.set_result(False)

    async def _settle(self, topic: str) -> None:
        """Return once every publication Redis made so far reached the handler.

        Only for a topic subscribed here, on a healthy connection, outside a
        catch-up (the reader is busy then, and hands on in order afterwards).
        Best effort: after ``publish_timeout``, or when the connection drops, it
        returns anyway; the caller may then see a publication it covered once more,
        never miss one.
        """
        pubsub = self._pubsub
        if (
            pubsub is None
            or not self._healthy
            or self._held is not None
            or self._channel(topic) not in self._wanted
        ):
            return
        token = secrets.token_hex(8).encode()
        barrier = asyncio.get_running_loop().create_future()
        self._barriers[token] = barrier
        try:
            await self._guard(self._on(pubsub, pubsub.ping(token)))
            await self._guard(barrier)
        except BrokerError as exc:
            self._log.debug("redis_broker_settle_failed", topic=topic, error=_describe(exc))
        finally:
            self._barriers.pop(token, None)

    async def _recover(self) -> None:
        """Replace the subscriber connection, retrying with backoff until it works."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _discard(pubsub)
        first, cap = self._backoff
        for attempt in itertools.count(1):
            await asyncio.sleep(random.uniform(first, min(cap, first * 2 ** min(attempt, 32))))
            try:
                self._pubsub = await self._open()
            except Exception as exc:
                self._last_error = _describe(exc)
                self._log.debug("redis_broker_reconnect_failed", attempt=attempt, error=exc)
                continue
            self._healthy = True
            self._reconnects += 1
            await self._catch_up()
            self._log.info(
                "redis_broker_reconnected",
                attempts=attempt,
                outage_seconds=round(loop.time() - started, 3),
                topics=len(self._wanted),
            )
            return

    # -- commands ----------------------------------------------------------------------

    async def _guard(self, operation: Awaitable[_T]) -> _T:
        """Await ``operation`` within ``publish_timeout``, in the broker's exceptions."""
        try:
            async with asyncio.timeout(self._timeout):
                return await operation
        except _UNAVAILABLE as exc:
            self._last_error = _describe(exc)
            raise BrokerUnavailable(
                f"Redis at {self._where} is unavailable: {self._last_error}"
            ) from exc
        except RedisError as exc:
            self._last_error = _describe(exc)
            raise BrokerError(f"Redis at {self._where} failed: {self._last_error}") from exc

    async def _script(self, script: _Script, topic: str, *args: str | bytes | int) -> Any:
        client = self._commands()
        keys = self._keys(topic)

        async def run() -> Any:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:  # a restarted Redis forgot it; EVAL caches it again
                return await client.eval(script.source, len(keys), *keys, *args)

        return await self._guard(run())

    async def publish(self, topic: str, payload: bytes, *, retain_key: str | None = None) -> int:
        """Assign the next seq, append to the history, retain, PUBLISH; return seq.

        All in one script. Raises BrokerUnavailable within about
        ``publish_timeout`` when Redis is down (the message was then not published,
        or, if the answer alone was lost, published once).
        """
        args: list[str | bytes | int] = [
            secrets.token_hex(8),
            payload,
            self._history_size,
            self._channel(topic),
        ]
        if retain_key is not None:
            args.append(retain_key)
        seq = int(await self._script(_PUBLISH, topic, *args))
        self._published += 1
        return seq

    async def forget_value(self, topic: str, key: str) -> None:
        """HDEL the key from the topic's retain hash; BrokerUnavailable when Redis is down."""
        await self._guard(self._commands().hdel(f"{self._prefix}:retain:{{{topic}}}", key))

    async def last_values(self, topic: str) -> list[Publication]:
        """Return the retained publication per key of ``topic``, oldest first."""
        key = f"{self._prefix}:retain:{{{topic}}}"
        packed = await self._guard(self._commands().hgetall(key))
        retained = [_unpack(topic, _as_bytes(value)) for value in packed.values()]
        retained.sort(key=lambda publication: publication.seq)
        return retained

    async def history(self, topic: str, *, epoch: str, since_seq: int) -> History:
        """Return what ``topic`` published after ``since_seq`` in ``epoch``.

        Complete only if every publication from ``since_seq + 1`` on is still kept
        (within ``history_size`` and ``history_ttl``) in the same epoch; otherwise
        ``complete`` is False and nothing is replayed. For a topic subscribed here
        it returns once the live publications up to the answer's ``seq`` reached
        the handler (see the module docstring).
        """
        reply = await self._script(
            _HISTORY, topic, secrets.token_hex(8), epoch, since_seq, self._history_size
        )
        await self._settle(topic)
        current, seq, now_ms, entries = reply[0].decode(), int(reply[1]), int(reply[2]), reply[3]
        if epoch != current or since_seq > seq or since_seq < 0:
            return History(False, (), current, seq)
        if since_seq == seq:
            return History(True, (), current, seq)
        missed = [_entry(topic, current, fields) for _, fields in reversed(entries)]
        oldest_ms = int(entries[-1][0].split(b"-")[0]) if entries else 0
        if [publication.seq for publication in missed] != list(
            range(since_seq + 1, seq + 1)
        ) or oldest_ms < now_ms - self._history_ttl * 1000:
            return History(False, (), current, seq)
        return History(True, missed, current, seq)

    async def position(self, topic: str) -> tuple[str, int]:
        """Return ``(epoch, last seq)``; a topic's first use creates its epoch.

        Like :meth:`history`, waits for a subscribed topic's live delivery to reach it.
        """
        reply = await self._script(_POSITION, topic, secrets.token_hex(8))
        await self._settle(topic)
        return reply[0].decode(), int(reply[1])

    # -- health ------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the subscriber connection is up and every topic subscribed."""
        return self._healthy

    def stats(self) -> dict[str, Any]:
        """Health and counters: ``reconnects`` counts outages recovered from,
        ``published`` the publications of this instance."""
        return {
            "kind": "redis",
            "healthy": self._healthy,
            "prefix": self._prefix,
            "reconnects": self._reconnects,
            "published": self._published,
            "subscribed_topics": len(self._wanted),
            "last_error": self._last_error,
            "gaps": self._gaps,
        }


def _unpack(topic: str, packed: bytes) -> Publication:
    """``b"<seq>:<epoch>:<payload>"`` -> Publication; ValueError if malformed."""
    seq, epoch, payload = packed.split(b":", 2)
    return Publication(topic, payload, int(seq), epoch.decode("ascii"))


def _entry(topic: str, epoch: str, fields: list[bytes]) -> Publication:
    """A history stream entry's flat ``[b"s", seq, b"p", payload]`` -> Publication."""
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    return Publication(topic, values[b"p"], int(values[b"s"]), epoch)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def _discard(pubsub: PubSub) -> None:
    # Closing a connection that already failed must not fail the caller (the reader).
    with suppress(Exception):
        close: Any = pubsub.aclose  # untyped in redis-py before 8
        await close()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _split_prefix(url: str, default: str) -> tuple[str, str]:
    """Remove a ``prefix`` query parameter from ``url``; return (url, prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if not prefixes:
        return url, default
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefixes[-1]


def _redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
