"""Record what an old client receives from a running backend on 127.0.0.1.

:func:`record` connects as an old-protocol client for a bounded time and returns
the payloads, to be saved as a scenario with :func:`shim.scenario.recorded_scenario`
and replayed by the CI comparison.

Exceptions::

    RecordingError   record() refused the URL or could not connect (``url``, ``reason``)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = ["LOCAL_HOSTS", "Recording", "RecordingError", "record", "record_endpoint"]


# -- recording from a running backend ---------------------------------------------------

#: Hosts :func:`record` connects to: recording is for a team's own local backend.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class RecordingError(Exception):
    """:func:`record` refused ``url`` or could not record from it (``reason`` says why)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class Recording:
    """What an old client received: ``(seconds since connecting, payload)`` per frame.

    ``skipped`` counts frames that were not JSON objects (they cannot be replayed
    as a producer call); ``closed_early`` is True when the server closed first.
    """

    url: str
    endpoint: str
    seconds: float
    received: list[tuple[float, dict[str, Any]]]
    skipped: int
    closed_early: bool

    def describe(self) -> str:
        text = (
            f"Recorded from {self.url} by an old client for {self.seconds:g} s:"
            f" {len(self.received)} payload(s)"
        )
        if self.skipped:
            text += f", {self.skipped} frame(s) that were not JSON objects skipped"
        if self.closed_early:
            text += ", the server closed the connection early"
        return text + "."


def record_endpoint(url: str) -> str:
    """Return the endpoint path of a URL :func:`record` accepts; raises RecordingError.

    Only ``ws://`` URLs on 127.0.0.1, localhost or ::1, without ``format``
    (the recorder is an old client, which never sends it).
    """
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise RecordingError(url, "only ws:// URLs can be recorded")
    if parts.hostname not in LOCAL_HOSTS:
        raise RecordingError(
            url, f"recording is limited to a local backend ({', '.join(sorted(LOCAL_HOSTS))})"
        )
    if "format" in parse_qs(parts.query):
        raise RecordingError(url, "the recorder is an old client: drop the format parameter")
    return parts.path or "/"


async def record(
    url: str,
    *,
    seconds: float,
    open_timeout: float = 5.0,
    on_connected: Callable[[], Awaitable[None] | None] | None = None,
) -> Recording:
    """Connect to ``url`` as an old client and keep what arrives for ``seconds``.

    ``on_connected`` runs once the handshake completed (a test starts traffic
    there). Needs the ``websockets`` package. Raises :class:`RecordingError` for
    a URL :func:`record_endpoint` refuses, a missing ``websockets``, or a failed
    connection; ``ValueError`` when ``seconds`` is not positive.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    endpoint = record_endpoint(url)
    try:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException
    except ImportError:  # pragma: no cover - websockets is a dev dependency
        raise RecordingError(url, "recording needs the websockets package") from None
    received: list[tuple[float, dict[str, Any]]] = []
    skipped = 0
    closed_early = False
    loop = asyncio.get_running_loop()
    try:
        async with connect(url, open_timeout=open_timeout, max_size=None) as websocket:
            start = loop.time()
            if on_connected is not None:
                waiting = on_connected()
                if waiting is not None:
                    await waiting
            while (remaining := start + seconds - loop.time()) > 0:
                try:
                    raw = await asyncio.wait_for(websocket.recv(), remaining)
                except TimeoutError:
                    break
                except ConnectionClosed:
                    closed_early = True
                    break
                payload = _json_object(raw)
                if payload is None:
                    skipped += 1
                else:
                    received.append((loop.time() - start, payload))
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise RecordingError(url, f"cannot connect: {exc!r}") from exc
    return Recording(url, endpoint, seconds, received, skipped, closed_early)


def _json_object(raw: str | bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
