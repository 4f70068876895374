"""The benchmark's wire contract: payloads, their marks, and the control channel. No I/O.

Every benchmark message carries ``bench_burst`` (which burst it belongs to) and
``sent_at`` (the server's ``time.time()`` right before the broadcast call), so the
client measures delivery latency as receive time minus ``sent_at`` and ignores
anything else (``connection_established``, heartbeats, filler, late frames of an
earlier burst).

The control channel is one WebSocket at :data:`CONTROL_PATH`, outside the code
under test; each request is a JSON object with an ``op`` and gets one JSON reply:

=========  ====================================  =========================================
op         request fields                        reply
=========  ====================================  =========================================
``stats``  -                                     ``pid``, ``rss``, ``cpu``, ``connections``,
                                                 ``burst`` (state of the last burst)
``burst``  ``id``, ``count``, ``size``           ``started``; the burst runs in the background
``fill``   ``chunk``, ``max_chunks``, ``wait``   ``sockets``, ``paused``, ``bytes`` once done
``gc``     -                                     ``collected``
``heap``   ``top``, ``group``                    allocations grown since the last ``heap``
                                                 (server started with PYTHONTRACEMALLOC)
=========  ====================================  =========================================

``fill`` writes filler frames straight to the sockets of clients that connected
with ``?stall=1`` until each one stops taking data (a send blocks for ``wait``
seconds) or got ``max_chunks`` frames: the state of a client that stopped reading
long ago, whose kernel and transport buffers are full.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

__all__ = [
    "BENCH_PATH",
    "CONTROL_PATH",
    "TOPIC",
    "BurstState",
    "legacy_payload",
    "pad_for",
    "parse_marks",
    "process_stats",
    "service_data",
]

#: The subscribers' endpoint in every variant.
BENCH_PATH = "/ws"
#: The control channel's endpoint in every variant.
CONTROL_PATH = "/bench/control"
#: The service topic the subscribers are on (the shim's translation puts
#: ``training_update`` on it too).
TOPIC = "training"

_BURST_KEY = b'"bench_burst":'
_SENT_KEY = b'"sent_at":'


def _fields(burst: int, n: int, pad: str) -> dict[str, Any]:
    return {
        "phase_name": "Cognate",
        "progress": round(n / 1000, 3),
        "message": f"step {n}",
        "status": "running",
        "bench_burst": burst,
        "n": n,
        "sent_at": time.time(),
        "pad": pad,
    }


def legacy_payload(burst: int, n: int, pad: str) -> dict[str, Any]:
    """A legacy ``training_update`` dict (the shape ``legacy.producers`` broadcasts)."""
    payload = {"type": "training_update", **_fields(burst, n, pad)}
    payload["timestamp"] = datetime.now().isoformat()
    return payload


def service_data(burst: int, n: int, pad: str) -> dict[str, Any]:
    """The ``data`` of the equivalent ``training_progress`` WebSocketMessage."""
    return _fields(burst, n, pad)


def pad_for(size: int) -> str:
    """Padding that brings a legacy payload to about ``size`` bytes of JSON."""
    import orjson

    bare = len(orjson.dumps(legacy_payload(1, 1, "")))
    return "x" * max(0, size - bare)


def parse_marks(frame: bytes) -> tuple[int, float] | None:
    """Return ``(bench_burst, sent_at)`` of a benchmark frame, or None for any other frame.

    Scans for the two keys instead of decoding the JSON, so the client spends a
    microsecond per message, not ten. Works on every variant's encoding (orjson
    and ``json.dumps`` with compact separators print both numbers without spaces).
    """
    start = frame.find(_SENT_KEY)
    if start < 0:
        return None
    burst_at = frame.find(_BURST_KEY)
    if burst_at < 0:
        return None
    start += len(_SENT_KEY)
    end = start
    size = len(frame)
    while end < size and frame[end] not in b",}":
        end += 1
    b_start = burst_at + len(_BURST_KEY)
    b_end = b_start
    while b_end < size and frame[b_end] not in b",}":
        b_end += 1
    try:
        return int(frame[b_start:b_end]), float(frame[start:end])
    except ValueError:
        return None


class BurstState:
    """What the server knows about its last burst (reported by ``stats``)."""

    __slots__ = ("count", "error", "finished", "id", "sent", "started")

    def __init__(self) -> None:
        self.id = 0
        self.count = 0
        self.sent = 0
        self.started = 0.0
        self.finished = 0.0
        self.error: str | None = None

    def begin(self, burst_id: int, count: int) -> None:
        self.id = burst_id
        self.count = count
        self.sent = 0
        self.started = time.time()
        self.finished = 0.0
        self.error = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "count": self.count,
            "sent": self.sent,
            "started": self.started,
            "finished": self.finished,
            "done": self.finished > 0.0,
            "error": self.error,
        }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_stats() -> dict[str, Any]:
    """This process: pid, resident set size (bytes) and CPU seconds (user + system)."""
    return {
        "pid": os.getpid(),
        "rss": _rss_bytes(),
        "cpu": time.process_time(),  # user + system, nanosecond clock (os.times() ticks 10 ms)
        "time": time.time(),
    }
