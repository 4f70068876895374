"""The client driver: ``python -m bench.client --url ws://127.0.0.1:P --n N ... --out F``.

One process, uvloop when installed, picows connections (C frame parser, one
Python callback per frame), so the client spends a few microseconds per message
and is not what limits the measurement; its own CPU share is reported with every
burst. What it does, in order:

1. Warm-up: ``min(20, N)`` connections, one small burst, close them (so lazy
   imports and first-call caches are in the baseline, not in the per-connection
   memory).
2. Baseline RSS of the server, then N connections opened in batches; waits until
   the server has registered all N, then the server's RSS again: memory per idle
   subscribed connection is the difference over N.
3. One unmeasured burst, then ``repeat`` measured bursts of ``burst`` messages:
   delivered count (every connection must get every message once), delivered
   messages per second = delivered / (last receive - first ``sent_at``), latency
   percentiles (receive time - ``sent_at``), server CPU seconds per delivered
   message, server and client CPU share of the burst's wall time.
4. ``repeat`` stall runs: 10 % of the connections (every tenth, opened with a
   small receive buffer and a 1460-byte MSS, like a client across a real network)
   stop reading, the server fills their buffers until sends block, then a burst;
   the latency of the other 90 % is measured. A run whose readers did not get
   their messages within the deadline is reported with its delivered fraction,
   and the remaining stall runs are skipped (they would only wait again).

Permessage-deflate (``--deflate``) is offered the way browsers offer it; frames
the server compressed are inflated here, with the negotiated window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import re
import resource
import socket
import sys
import time
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .protocol import BENCH_PATH, CONTROL_PATH, parse_marks
from .serve import raise_fd_limit
from .stats import json_float, percentile

__all__ = ["ClientConfig", "main", "run"]

_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_WINDOW = re.compile(r"server_max_window_bits=(\d+)")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """One client session against one running server."""

    url: str
    n: int
    burst: int = 20
    size: int = 300
    repeat: int = 3
    deflate: bool = False
    stall_every: int = 10
    stall_runs: bool = True
    batch: int = 200
    unit: float = 1.0


class Tally:
    """Counts the frames of the burst being measured; fed by every subscriber."""

    def __init__(self) -> None:
        self.burst = -1
        self.marker = b"-"
        self.expected = 0
        self.received = 0
        self.frames: list[bytes] = []
        self.times = array("d")
        self.wire = 0
        self.complete: asyncio.Event | None = None

    def reset(self, burst: int, expected: int) -> None:
        # Burst ids have three digits (100-999), so the marker of burst 12 can
        # never match inside the marker of burst 123.
        if not 100 <= burst <= 999:
            raise ValueError("burst ids are 100-999")
        self.burst = burst
        self.marker = b'"bench_burst":%d' % burst
        self.expected = expected
        self.received = 0
        self.frames = []
        self.times = array("d")
        self.wire = 0
        self.complete = asyncio.Event()

    def seen(self, subscriber: Subscriber, data: bytes, wire: int) -> None:
        """Keep a frame of the measured burst with its receive time; parse it later.

        ``wire`` is what the message took on the wire (frame header and payload as
        received, compressed or not). The hot path is one substring test, two
        appends and a sum: ``sent_at`` is only parsed after the burst
        (:meth:`latencies`), so the client stays cheap.
        """
        if self.marker in data and subscriber.counting:
            self.frames.append(data)
            self.times.append(time.time())
            self.wire += wire
            self.received += 1
            subscriber.got += 1
            if self.received >= self.expected and self.complete is not None:
                self.complete.set()

    def latencies(self) -> tuple[list[float], float, float, int]:
        """``(latencies, first sent_at, last receive time, bytes)`` of the kept frames."""
        out: list[float] = []
        first = math.inf
        size = 0
        for data, received in zip(self.frames, self.times, strict=True):
            marks = parse_marks(data)
            if marks is None or marks[0] != self.burst:
                continue
            out.append(received - marks[1])
            first = min(first, marks[1])
            size += len(data)
        return out, first, max(self.times, default=0.0), size


def _frame_bytes(payload: int) -> int:
    """Bytes of an unmasked server frame carrying ``payload`` bytes (header included)."""
    return payload + (2 if payload < 126 else 4 if payload < 1 << 16 else 10)


# picows is imported lazily so that importing this module (for tests, mypy) does
# not require it; the listener class is built on first use.
_subscriber_class: Any = None


def _make_subscriber_class() -> Any:
    from picows import WSListener, WSMsgType

    text, binary, cont, close = (
        WSMsgType.TEXT,
        WSMsgType.BINARY,
        WSMsgType.CONTINUATION,
        WSMsgType.CLOSE,
    )

    class _Subscriber(WSListener):
        def __init__(self, tally: Tally, index: int, negotiated: str | None) -> None:
            super().__init__()
            self.tally = tally
            self.index = index
            self.counting = True
            self.got = 0
            self.closed = False
            self.transport: Any = None
            self.parts: list[bytes] = []
            self.compressed = False
            self.inflater: Any = None
            if negotiated and "permessage-deflate" in negotiated:
                match = _WINDOW.search(negotiated)
                # One inflater for the connection's life, as browsers keep theirs:
                # it reads messages compressed with or without server context
                # (without, the window it keeps is simply never referenced).
                self.inflater = zlib.decompressobj(-int(match.group(1)) if match else -15)

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind is text or kind is binary:
                if frame.fin:
                    data = frame.get_payload_as_bytes()
                    wire = _frame_bytes(len(data))
                    if frame.rsv1:
                        data = self._inflate(data)
                    self.tally.seen(self, data, wire)
                else:
                    self.compressed = bool(frame.rsv1)
                    self.parts = [frame.get_payload_as_bytes()]
            elif kind is cont:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    wire = sum(_frame_bytes(len(part)) for part in self.parts)
                    data = b"".join(self.parts)
                    self.parts = []
                    if self.compressed:
                        data = self._inflate(data)
                    self.tally.seen(self, data, wire)
            elif kind is close:
                self.closed = True
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def _inflate(self, data: bytes) -> bytes:
            if self.inflater is None:
                raise ValueError("compressed frame without permessage-deflate")
            out: bytes = self.inflater.decompress(data + _DEFLATE_TAIL)
            return out

        def on_ws_disconnected(self, transport: Any) -> None:
            self.closed = True

    return _Subscriber


Subscriber = Any


class Session:
    """A client session: the control connection, the subscribers and the measurements."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.tally = Tally()
        self.subscribers: list[Any] = []
        self.control: Any = None
        self.burst_id = 99  # ids are 100-999, see Tally.reset
        self.errors: list[str] = []

    # -- control channel ------------------------------------------------------------

    async def request(self, op: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        await self.control.send(orjson.dumps({"op": op, **fields}).decode())
        reply: dict[str, Any] = orjson.loads(
            await asyncio.wait_for(self.control.recv(), timeout * self.config.unit)
        )
        if "error" in reply:
            raise RuntimeError(f"server refused {op}: {reply['error']}")
        return reply

    async def open_control(self, deadline: float) -> None:
        from websockets.asyncio.client import connect

        while True:
            try:
                self.control = await connect(
                    self.config.url + CONTROL_PATH,
                    compression=None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=5,
                )
                return
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def wait_connections(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout * self.config.unit
        while True:
            seen = int((await self.request("stats"))["connections"])
            if seen == count or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.05)

    async def wait_burst_done(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout * self.config.unit
        while True:
            stats = await self.request("stats")
            if stats["burst"]["done"] or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.05)

    # -- subscribers ----------------------------------------------------------------

    async def connect(self, index: int, stalled: bool) -> Any:
        from picows import ws_connect

        global _subscriber_class
        if _subscriber_class is None:
            _subscriber_class = _make_subscriber_class()
        cls = _subscriber_class
        tally = self.tally

        def factory(request: Any, response: Any) -> Any:
            negotiated = response.headers.get("Sec-WebSocket-Extensions")
            return cls(tally, index, negotiated)

        def stalled_socket(parsed: Any) -> socket.socket:
            # Like a client on a real network path: a small receive window and a
            # 1460-byte MSS, so the server's kernel buffers hold tens of KiB, not
            # the megabytes loopback's 64 KiB MSS would let it queue.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
            return sock

        url = self.config.url + BENCH_PATH + ("?stall=1" if stalled else "")
        headers = {"Sec-WebSocket-Extensions": _DEFLATE_OFFER} if self.config.deflate else None
        last: Exception | None = None
        for _ in range(3):
            try:
                _, listener = await ws_connect(
                    factory,
                    url,
                    extra_headers=headers,
                    socket_factory=stalled_socket if stalled else None,
                    websocket_handshake_timeout=30 * self.config.unit,
                    enable_auto_pong=True,
                )
                return listener
            except Exception as exc:  # retried: a full accept backlog, a reset
                last = exc
                await asyncio.sleep(0.2)
        raise RuntimeError(f"connection {index} failed: {last!r}")

    async def connect_many(self, count: int, *, stall: bool) -> list[Any]:
        out: list[Any] = []
        every = self.config.stall_every
        for start in range(0, count, self.config.batch):
            stop = min(count, start + self.config.batch)
            out.extend(
                await asyncio.gather(
                    *(
                        self.connect(i, stall and every > 0 and i % every == every // 2)
                        for i in range(start, stop)
                    )
                )
            )
        return out

    @staticmethod
    def close_all(subscribers: Sequence[Any]) -> None:
        for sub in subscribers:
            if sub.transport is not None and not sub.closed:
                sub.transport.send_close()
                sub.transport.disconnect()

    # -- measurements ---------------------------------------------------------------

    async def burst(self, readers: Sequence[Any], *, deadline: float) -> dict[str, Any]:
        """Trigger one burst and measure what ``readers`` receive before ``deadline`` s."""
        config = self.config
        self.burst_id += 1
        expected = len(readers) * config.burst
        reading = {id(sub) for sub in readers}
        for sub in self.subscribers:
            sub.counting = id(sub) in reading
            sub.got = 0
        tally = self.tally
        tally.reset(self.burst_id, expected)
        before = await self.request("stats")
        cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
        await self.request("burst", id=self.burst_id, count=config.burst, size=config.size)
        assert tally.complete is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.complete.wait(), deadline)
        cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.time()
        delivered = tally.received
        counts = [sub.got for sub in readers]
        latencies, first, last, size = tally.latencies()
        wire = tally.wire
        user, system = cpu1.ru_utime - cpu0.ru_utime, cpu1.ru_stime - cpu0.ru_stime
        return {
            "burst_id": self.burst_id,
            "expected": expected,
            "delivered": delivered,
            "complete": delivered >= expected,
            "per_connection_min": min(counts) if counts else 0,
            "per_connection_max": max(counts) if counts else 0,
            "mean_bytes": size / delivered if delivered else None,
            "mean_wire_bytes": wire / delivered if delivered else None,
            "throughput": delivered / (last - first) if delivered and last > first else None,
            "p50": json_float(percentile(latencies, 50, expected=expected)),
            "p99": json_float(percentile(latencies, 99, expected=expected)),
            "max_latency": max(latencies) if latencies else None,
            "window": (last - first) if delivered else None,
            "client_cpu_share": (user + system) / (wall1 - wall0) if wall1 > wall0 else None,
            "client_cpu_user": user,
            "client_cpu_system": system,
            "server_before": before,
        }

    async def finish(self, result: dict[str, Any], *, settle: float, wait: float) -> None:
        """Wait until the server's burst is over, settle, and add its CPU figures."""
        after = await self.wait_burst_done(wait)
        if after["burst"]["done"]:
            await asyncio.sleep(settle)
            after = await self.request("stats")
        before = result.pop("server_before")
        cpu = after["cpu"] - before["cpu"]
        delivered = result["delivered"]
        result["server_done"] = bool(after["burst"]["done"])
        result["server_error"] = after["burst"]["error"]
        result["server_cpu"] = cpu
        result["server_cpu_per_msg"] = cpu / delivered if delivered else None
        duration = after["burst"]["finished"] - after["burst"]["started"]
        result["server_burst_seconds"] = duration if after["burst"]["done"] else None
        window = result["window"]
        result["server_cpu_share"] = min(cpu, window) / window if window else None
        result["connections_after"] = after["connections"]


async def run(config: ClientConfig) -> dict[str, Any]:
    """Run a whole session against the server at ``config.url``; return the results."""
    raise_fd_limit()
    session = Session(config)
    started = time.monotonic()
    await session.open_control(started + 30 * config.unit)
    unit = config.unit
    out: dict[str, Any] = {"config": asdict(config), "errors": session.errors}
    try:
        # 1. Warm-up.
        warm = await session.connect_many(min(20, config.n), stall=False)
        session.subscribers = warm
        await session.wait_connections(len(warm), 30)
        warm_burst = await session.burst(warm, deadline=30 * unit)
        await session.finish(warm_burst, settle=0.0, wait=30)
        session.close_all(warm)
        await session.wait_connections(0, 30)
        session.subscribers = []
        # 2. Memory.
        await session.request("gc")
        await asyncio.sleep(0.3)
        base = await session.request("stats")
        t0 = time.monotonic()
        subs = await session.connect_many(config.n, stall=config.stall_runs)
        session.subscribers = subs
        registered = await session.wait_connections(config.n, 60 + config.n / 200)
        connect_seconds = time.monotonic() - t0
        if registered != config.n:
            session.errors.append(f"server registered {registered} of {config.n} connections")
        await session.request("gc")
        await asyncio.sleep(0.5)
        idle = await session.request("stats")
        gc.collect()
        gc.freeze()
        negotiated = sum(1 for sub in subs if sub.inflater is not None)
        out["connect_seconds"] = connect_seconds
        out["negotiated_deflate"] = negotiated
        out["server_pid"] = idle["pid"]
        out["memory"] = {
            "rss_before": base["rss"],
            "rss_idle": idle["rss"],
            "per_connection": (idle["rss"] - base["rss"]) / config.n,
        }
        # 3. Bursts.
        deadline = (10 + config.n * config.burst * 200e-6) * unit
        warm_run = await session.burst(subs, deadline=deadline)
        await session.finish(warm_run, settle=0.2, wait=60)
        bursts = []
        for _ in range(config.repeat):
            result = await session.burst(subs, deadline=deadline)
            await session.finish(result, settle=1.0, wait=60)
            bursts.append(result)
        out["bursts"] = bursts
        # 4. Stalls.
        stalls: list[dict[str, Any]] = []
        out["stalls"] = stalls
        if config.stall_runs and config.stall_every > 0:
            every = config.stall_every
            stalled = [s for s in subs if s.index % every == every // 2]
            readers = [s for s in subs if s.index % every != every // 2]
            windows = [b["window"] for b in bursts if b["window"]]
            stall_deadline = max(2.0 * unit, 3 * max(windows, default=1.0))
            for _ in range(config.repeat):
                for sub in stalled:
                    sub.transport.underlying_transport.pause_reading()
                fill = await session.request(
                    "fill", chunk=16384, max_chunks=256, wait=0.25, timeout=60
                )
                result = await session.burst(readers, deadline=stall_deadline)
                result["fill"] = fill
                result["stalled"] = len(stalled)
                for sub in stalled:
                    if not sub.closed:
                        sub.transport.underlying_transport.resume_reading()
                await session.finish(result, settle=0.5, wait=60)
                stalls.append(result)
                if not result["complete"] and result["delivered"] < 0.5 * result["expected"]:
                    break  # blocked: another run would only wait for the deadline again
        out["client_closed"] = sum(1 for sub in subs if sub.closed)
    except Exception as exc:
        session.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        session.close_all(session.subscribers)
        if session.control is not None:
            await session.control.close()
    out["seconds"] = time.monotonic() - started
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT of the server")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--no-stall", action="store_true")
    parser.add_argument("--unit", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.url.startswith("ws://127.0.0.1:"):
        parser.error("the benchmark only talks to 127.0.0.1")
    config = ClientConfig(
        url=args.url,
        n=args.n,
        burst=args.burst,
        size=args.size,
        repeat=args.repeat,
        deflate=args.deflate,
        stall_runs=not args.no_stall,
        unit=args.unit,
    )
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(config))
    else:
        result = uvloop.run(run(config))
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
