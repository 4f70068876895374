"""One connection: the per-recipient delivery path and its bounded send buffer.

Fan-out calls :meth:`Connection.deliver` synchronously for every recipient with a
text encoded once for all of them. A healthy connection takes the text at once:
its transport's ``send_text`` coroutine is stepped right there and, on uvicorn, it
completes without suspending, so no task is created and nothing is queued. Only
when a send suspends (the client's socket buffer is full) does the connection get
a writer task, and later texts wait in a bounded queue until the writer drains it.
When the queue is full the configured :class:`OverflowPolicy` applies, so a client
that stops reading never delays anyone else and never grows memory without bound.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from .errors import CloseCode

__all__ = [
    "Connection",
    "FeedConnection",
    "OverflowPolicy",
    "SendLimits",
    "Transport",
    "resume_stepped",
]


class Transport(Protocol):
    """What a connection needs from a socket (Starlette's WebSocket fits).

    A transport may also offer ``write_now(text) -> bool``: a synchronous write
    that returns ``False`` when it cannot write at once (then ``send_text`` is
    used), ``write_buffer_size() -> int``: the bytes the server holds unsent for
    the socket (checked against ``SendLimits.max_transport_bytes``), and
    ``abort()``: drop the TCP connection; see :class:`service.asgi.AsgiTransport`.
    """

    def send_text(self, data: str) -> Awaitable[None]: ...

    # Optional: ``send_bytes(data) -> Awaitable[None]``, for binary frames queued
    # with :meth:`FeedConnection.feed_bytes`.

    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]: ...


class OverflowPolicy(StrEnum):
    """What happens when a connection's send buffer is full."""

    #: Close the connection with 1013 (try again later); the client reconnects and
    #: resumes, so nothing is lost silently. The default.
    DISCONNECT = "disconnect"
    #: Drop the oldest buffered messages to make room (clients see a ``seq`` gap).
    DROP_OLDEST = "drop_oldest"


@dataclass(frozen=True, slots=True)
class SendLimits:
    """Per-connection send buffer bounds (messages and characters) and overflow policy.

    ``max_transport_bytes`` caps what the server's own transport holds unsent for
    a client, below this queue: uvicorn answers every ping with a pong written
    straight into it, read or not, so a client that floods pings and never reads
    grows it without end. Every ``transport_check_interval`` seconds (with
    ``WebSocketService.start()``) a connection over the cap is aborted (TCP
    reset; it cannot take a close frame) and counted in ``closed_transport_overflow``.
    Keep the cap above your largest message plus uvicorn's 64 KiB high-water mark;
    ``None`` turns the check off. Only transports that report their buffer take
    part (:class:`service.asgi.AsgiTransport` behind ``DirectSendMiddleware`` or
    ``ServiceEndpoint`` on uvicorn).
    """

    max_messages: int = 1024
    max_bytes: int = 4 * 1024 * 1024
    policy: OverflowPolicy = OverflowPolicy.DISCONNECT
    close_code: int = CloseCode.TRY_AGAIN_LATER
    max_transport_bytes: int | None = 8 * 1024 * 1024
    transport_check_interval: float = 0.25

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_bytes < 1:
            raise ValueError("send buffer limits must be positive")
        if self.max_transport_bytes is not None and self.max_transport_bytes < 1:
            raise ValueError("max_transport_bytes must be positive (or None)")
        if self.transport_check_interval <= 0:
            raise ValueError("transport_check_interval must be positive")


DeadCallback = Callable[["Connection", str, int], None]

#: The queue of every connection that never had to buffer: most connections never
#: do, and an empty deque costs ~600 bytes. Never mutated (see ``_own_queue``).
_NO_QUEUE: deque[str | bytes] = deque(maxlen=0)


@types.coroutine
def resume_stepped(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine that was stepped by hand and suspended on ``pending``.

    This is Python 3.12's eager task start, done by hand for 3.11: the first step
    ran synchronously in :meth:`Connection.deliver`; the rest runs in a task that
    awaits this generator, which re-yields what the coroutine waits on and forwards
    results and exceptions (cancellation included) back into it.
    """
    while True:
        try:
            value = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # forwarded into the coroutine
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


class Connection:
    """A registered socket, its metadata and its delivery state.

    ``deliver`` never blocks and never raises; a send failure or a buffer overflow
    marks the connection closed and reports it once through ``on_dead`` (which must
    not mutate the topic registry synchronously: fan-out may be iterating it).
    """

    __slots__ = (
        "_held",
        "_loop",
        "_on_dead",
        "_queue",
        "_queued_chars",
        "_write_now",
        "_writer",
        "closed",
        "codec",
        "connection_id",
        "dropped",
        "failed",
        "heartbeat",
        "last_seen",
        "limits",
        "metadata",
        "sent",
        "transport",
    )

    def __init__(
        self,
        connection_id: str,
        transport: Transport,
        *,
        metadata: dict[str, Any],
        limits: SendLimits,
        on_dead: DeadCallback,
        last_seen: float,
        codec: str | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.connection_id = connection_id
        self.transport = transport
        self.metadata = metadata
        self.limits = limits
        self.codec = codec
        self.heartbeat = heartbeat
        self.last_seen = last_seen
        self.closed = False
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._on_dead = on_dead
        self._queue = _NO_QUEUE
        self._queued_chars = 0
        self._writer: asyncio.Task[None] | None = None
        self._write_now: Callable[[str], bool] | None = getattr(transport, "write_now", None)
        self._held = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def backlog(self) -> int:
        """Messages waiting behind a send in flight."""
        return len(self._queue)

    def deliver(self, text: str) -> None:
        """Send ``text`` now if the socket takes it, else buffer it (bounded)."""
        if self.closed:
            return
        if self._writer is None and not self._held:
            write_now = self._write_now  # the fast path, inlined: this runs per recipient
            if write_now is not None:
                try:
                    if write_now(text):
                        self.sent += 1
                        return
                except Exception as exc:
                    self._fail(exc)
                    return
            self._send_awaitable(text)
        else:
            self._enqueue(text)

    def hold(self) -> None:
        """Buffer deliveries (bounded, as usual) until :meth:`release`.

        Used while a subscription is being set up, so that its acknowledgement and
        replay reach the client before live messages that arrived meanwhile.
        """
        self._held = True

    def release(self, first: Sequence[str], *, keep: Callable[[str], bool] | None = None) -> None:
        """Send ``first``, then what was buffered while held (only texts ``keep`` accepts)."""
        self._held = False
        if self.closed:
            return
        self._own_queue()
        if keep is not None and self._queue:
            kept = [text for text in self._queue if isinstance(text, bytes) or keep(text)]
            self._queue = deque(kept)
            self._queued_chars = sum(len(text) for text in kept)
        for text in reversed([text for text in first if self.accepts(text)]):
            self._queue.appendleft(text)
            self._queued_chars += len(text)
        while self._queue and self._writer is None and not self.closed:
            frame = self._queue.popleft()
            self._queued_chars -= len(frame)
            # Already accepted when queued; a send that suspends becomes the writer.
            if isinstance(frame, bytes):
                self._send_awaitable(frame)
            else:
                Connection.deliver(self, frame)
        self._drop_queue_if_idle()

    def accepts(self, text: str) -> bool:
        """Whether the service's own frames reach this socket (see :class:`FeedConnection`)."""
        return True

    def _send_binary(self, frame: bytes) -> Awaitable[None]:
        send_bytes: Callable[[bytes], Awaitable[None]] | None = getattr(
            self.transport, "send_bytes", None
        )
        if send_bytes is None:
            raise TypeError(f"{type(self.transport).__name__} cannot send binary frames")
        return send_bytes(frame)

    def _send_awaitable(self, text: str | bytes) -> None:
        try:
            awaitable = (
                self.transport.send_text(text) if isinstance(text, str) else self._send_binary(text)
            )
        except Exception as exc:  # any failure means the socket is gone
            self._fail(exc)
            return
        if not isinstance(awaitable, Coroutine):
            self._start_writer(awaitable)
            return
        try:
            pending = awaitable.send(None)
        except StopIteration:
            self.sent += 1
            return
        except Exception as exc:
            self._fail(exc)
            return
        self._start_writer(resume_stepped(awaitable, pending))

    def _start_writer(self, first: Awaitable[Any]) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._writer = self._loop.create_task(self._drain(first))

    async def _drain(self, first: Awaitable[Any]) -> None:
        try:
            await first
            self.sent += 1
            while self._queue and not self.closed:
                text = self._queue.popleft()
                self._queued_chars -= len(text)
                if isinstance(text, str):
                    await self.transport.send_text(text)
                else:
                    await self._send_binary(text)
                self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._writer = None
            self._drop_queue_if_idle()

    def _own_queue(self) -> None:
        if self._queue is _NO_QUEUE:
            self._queue = deque()

    def _drop_queue_if_idle(self) -> None:
        if not self._queue and self._writer is None and not self._held:
            self._queue = _NO_QUEUE

    def _enqueue(self, text: str | bytes) -> None:
        self._own_queue()
        limits = self.limits
        if (
            len(self._queue) < limits.max_messages
            and self._queued_chars + len(text) <= limits.max_bytes
        ):
            self._queue.append(text)
            self._queued_chars += len(text)
            return
        if limits.policy is OverflowPolicy.DROP_OLDEST:
            while self._queue and (
                len(self._queue) >= limits.max_messages
                or self._queued_chars + len(text) > limits.max_bytes
            ):
                self._queued_chars -= len(self._queue.popleft())
                self.dropped += 1
            if self._queued_chars + len(text) <= limits.max_bytes:
                self._queue.append(text)
                self._queued_chars += len(text)
            else:
                self.dropped += 1
            return
        self.dropped += 1 + len(self._queue)
        self._mark_dead("send buffer full: client too slow", limits.close_code)

    def _fail(self, exc: BaseException) -> None:
        self.failed += 1
        self._mark_dead(f"send failed: {type(exc).__name__}", CloseCode.INTERNAL_ERROR)

    def _mark_dead(self, reason: str, code: int) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._queued_chars = 0
        self._on_dead(self, reason, code)

    def cancel_writer(self) -> None:
        """Cancel a send in flight (a stalled client) so its task does not linger."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    async def close(self, code: int, reason: str, *, timeout: float) -> None:
        """Mark closed, stop writing and send a close frame, giving up after ``timeout``.

        A stalled client cannot take even the close frame: after ``timeout`` the
        transport's ``abort()`` (if it has one) drops the TCP connection, so the
        socket and its buffers go now, not when the server's keepalive gives up.
        """
        self.closed = True
        self._queue.clear()
        self._queued_chars = 0
        self.cancel_writer()
        try:
            await asyncio.wait_for(self.transport.close(code, reason), timeout)
        except TimeoutError:
            abort = getattr(self.transport, "abort", None)
            if abort is not None:
                with suppress(Exception):
                    abort()
        except Exception:  # the socket may already be gone
            pass


class FeedConnection(Connection):
    """A connection whose socket another sender feeds too, through the same writer.

    The migration shim attaches each client socket to the legacy manager and to
    the service; both must write through one bounded writer (one queue, one
    overflow policy, one order). The service's frames pass ``accepts`` first (the
    shim's stage: deliver, record only, or nothing), decided when a frame is
    queued, never when it is written, so a stage flip never drops or repeats what
    is queued. :meth:`feed` is the other side's entry: the same queue, unfiltered.
    """

    __slots__ = ("_accepts",)

    def __init__(
        self, connection_id: str, transport: Transport, *, accepts: Callable[[str], bool], **kw: Any
    ) -> None:
        super().__init__(connection_id, transport, **kw)
        self._accepts = accepts

    def accepts(self, text: str) -> bool:
        return self._accepts(text)

    def deliver(self, text: str) -> None:
        if self._accepts(text):
            Connection.deliver(self, text)

    def feed(self, text: str) -> bool:
        """Queue ``text`` from the other sender; False (nothing queued) once closed."""
        if self.closed:
            return False
        Connection.deliver(self, text)
        return True

    def feed_bytes(self, data: bytes) -> bool:
        """Queue a binary frame from the other sender, in order with the texts (the
        transport's ``send_bytes`` writes it); False once closed."""
        if self.closed:
            return False
        if self._writer is None and not self._held:
            self._send_awaitable(data)
        else:
            self._enqueue(data)
        return True
