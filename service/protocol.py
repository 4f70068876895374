"""The client control protocol, sans I/O: client text in, events and replies out.

A client sends one JSON object per text frame::

    {"type": "subscribe",   "data": {"topic": "training"}, "id": "1"}
    {"type": "unsubscribe", "data": {"topic": "training"}, "id": "2"}
    {"type": "ping", "id": "3"}
    {"type": "pong"}                       # answer to a server ``heartbeat``
    {"type": "auth", "data": {"token": "..."}, "id": "4"}   # a fresh token (see below)
    {"type": "custom", "data": {...}}      # any other type goes to a registered handler

``topic`` may also sit at the top level. ``id`` is optional and echoed on the
reply (``subscribed``, ``unsubscribed``, ``pong``, ``connection_established`` or
``error``) so the client can pair replies with requests.

``auth`` refreshes the credentials of an open connection before they expire.
It is answered with ``connection_established`` again (same ``connection_id``,
the new ``expires_at``) or with an ``error`` (``invalid_token``,
``principal_mismatch``) that leaves the old deadline in place. ``auth`` is not
an envelope :class:`~service.messages.MessageType`: the server never sends it.
Nothing here awaits, reads the clock or touches a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .auth import AUTH_MESSAGE_TYPE
from .errors import ErrorCode, ProtocolError
from .messages import MessageType, WebSocketMessage, coerce_type

__all__ = [
    "DEFAULT_MAX_TOPIC_LENGTH",
    "TOPIC_PATTERN",
    "ClientEvent",
    "Dispatch",
    "HeartbeatPolicy",
    "Ping",
    "Pong",
    "Reauthenticate",
    "Subscribe",
    "Unsubscribe",
    "connection_established",
    "error_message",
    "parse_client_frame",
    "pong",
    "request_id_of",
    "subscription_ack",
    "validate_topic",
]

#: Topic names: 1-128 characters from letters, digits and ``_ . : - /``, starting
#: with a letter or digit. Names starting with ``$`` are reserved for the service.
#: (The service's ``max_topic_length`` may set another length; the charset is fixed.)
TOPIC_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")

#: Longest topic name accepted unless the service is configured otherwise.
DEFAULT_MAX_TOPIC_LENGTH = 128

_TOPIC_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")

_CLIENT_ONLY_REJECTED = frozenset(
    {
        MessageType.CONNECTION_ESTABLISHED,
        MessageType.SUBSCRIBED,
        MessageType.UNSUBSCRIBED,
        MessageType.ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to ``topic``; with ``resume`` = ``(epoch, seq)``, replay what came after it."""

    topic: str
    request_id: str | None
    resume: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Pong:
    """The client answered a heartbeat (any frame also counts as liveness)."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """An application message for the handler registered for ``type``."""

    type: MessageType | str
    data: dict[str, Any]
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Reauthenticate:
    """The client sent a fresh token in an ``auth`` message (verified by the service).

    ``token`` is the credential: never log this event.
    """

    token: str = field(repr=False)
    request_id: str | None = None


ClientEvent = Subscribe | Unsubscribe | Ping | Pong | Reauthenticate | Dispatch


def validate_topic(
    topic: object,
    *,
    request_id: str | None = None,
    max_length: int = DEFAULT_MAX_TOPIC_LENGTH,
) -> str:
    """Return ``topic`` if it is a valid client topic name, else raise ProtocolError.

    Valid: 1 to ``max_length`` characters of letters, digits and ``_ . : - /``,
    starting with a letter or digit (so ``$``-names stay reserved for the service).
    """
    if not isinstance(topic, str) or not topic:
        raise ProtocolError(
            ErrorCode.MISSING_FIELD, "a non-empty string 'topic' is required", request_id=request_id
        )
    if len(topic) > max_length or _TOPIC_CHARS.fullmatch(topic) is None:
        raise ProtocolError(
            ErrorCode.INVALID_TOPIC,
            f"topic must be 1-{max_length} characters of letters, digits and _.:/- "
            "starting with a letter or digit",
            request_id=request_id,
        )
    return topic


def request_id_of(text: str | bytes, *, max_size: int | None) -> str | None:
    """The ``id`` of a frame, if it has a valid one; never raises.

    For replies to frames that are refused before parsing (rate limiting), so
    the client can still pair the ``error`` with its request.
    """
    if max_size is not None and len(text) > max_size:
        return None
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    request_id = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(request_id, str | int):  # as parse_client_frame accepts them
        return None
    return str(request_id)


def parse_client_frame(
    text: str, *, max_size: int | None, max_topic_length: int = DEFAULT_MAX_TOPIC_LENGTH
) -> ClientEvent:
    """Turn one client text frame into an event.

    Raises :class:`ProtocolError` with the code to send back: ``message_too_large``
    (over ``max_size`` UTF-8 bytes), ``invalid_json``, ``invalid_message`` (not an
    object, bad ``id``/``data``), ``unknown_type``, ``missing_field`` or
    ``invalid_topic`` (see :func:`validate_topic`).
    """
    if max_size is not None and (
        len(text) > max_size or (len(text) * 4 > max_size and len(text.encode()) > max_size)
    ):
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message exceeds the limit of {max_size} bytes"
        )
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")

    request_id = raw.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "'id' must be a string or an integer")
    request_id = None if request_id is None else str(request_id)

    type_name = raw.get("type")
    if type_name is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "'type' is required", request_id=request_id)
    if type_name == AUTH_MESSAGE_TYPE:
        return _reauthenticate(raw, request_id)
    try:
        message_type = coerce_type(type_name)
    except (ValueError, TypeError):
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {type_name!r}", request_id=request_id
        ) from None

    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "'data' must be a JSON object", request_id=request_id
        )

    if message_type is MessageType.SUBSCRIBE or message_type is MessageType.UNSUBSCRIBE:
        topic = validate_topic(
            data.get("topic", raw.get("topic")),
            request_id=request_id,
            max_length=max_topic_length,
        )
        if message_type is MessageType.SUBSCRIBE:
            return Subscribe(topic, request_id, _resume_position(data.get("resume"), request_id))
        return Unsubscribe(topic, request_id)
    if message_type is MessageType.PING:
        return Ping(request_id)
    if message_type is MessageType.PONG or message_type is MessageType.HEARTBEAT:
        return Pong()
    if message_type in _CLIENT_ONLY_REJECTED:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"{type_name!r} is sent by the server, not accepted from clients",
            request_id=request_id,
        )
    return Dispatch(message_type, data, request_id)


def _reauthenticate(raw: dict[str, Any], request_id: str | None) -> Reauthenticate:
    """``{"type": "auth", "data": {"token": "..."}}`` (``token`` may sit at the top level)."""
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "'data' must be a JSON object", request_id=request_id
        )
    token = (data or {}).get("token", raw.get("token"))
    if not isinstance(token, str) or not token:
        raise ProtocolError(
            ErrorCode.MISSING_FIELD,
            "an auth message needs a non-empty string 'token'",
            request_id=request_id,
        )
    return Reauthenticate(token, request_id)


# -- replies ---------------------------------------------------------------------


def connection_established(
    connection_id: str,
    *,
    heartbeat_interval: float | None,
    metadata: dict[str, Any],
    expires_at: float | None = None,
    request_id: str | None = None,
) -> WebSocketMessage:
    """The first message on every connection: its id and the heartbeat contract.

    ``expires_at`` (Unix seconds, only when set) is when the server will close
    the connection unless the client refreshes its token with an ``auth``
    message; the reply to that message is this message again, with the new
    ``expires_at`` and the request's ``id``.
    """
    data: dict[str, Any] = {
        "connection_id": connection_id,
        "heartbeat_interval": heartbeat_interval,
        "metadata": metadata,
    }
    if expires_at is not None:
        data["expires_at"] = expires_at
    return WebSocketMessage(type=MessageType.CONNECTION_ESTABLISHED, data=data, id=request_id)


def _resume_position(value: object, request_id: str | None) -> tuple[str, int] | None:
    """``{"epoch": str, "seq": int >= 0}`` -> ``(epoch, seq)``; absent -> None."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("epoch"), str)
        or not isinstance(value.get("seq"), int)
        or isinstance(value.get("seq"), bool)
        or value["seq"] < 0
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            '\'resume\' must be {"epoch": string, "seq": non-negative integer}',
            request_id=request_id,
        )
    return value["epoch"], value["seq"]


def subscription_ack(
    event: Subscribe | Unsubscribe,
    *,
    seq: int | None = None,
    epoch: str | None = None,
    recovered: bool | None = None,
) -> WebSocketMessage:
    """``subscribed``/``unsubscribed`` reply; ``seq``/``epoch`` give the topic's position.

    ``recovered`` answers a resume: True when every missed message follows, False
    when the history could not cover the gap (nothing partial is replayed then).
    """
    data: dict[str, Any] = {"topic": event.topic}
    if isinstance(event, Subscribe):
        data["seq"] = seq
        data["epoch"] = epoch
        if recovered is not None:
            data["recovered"] = recovered
        kind = MessageType.SUBSCRIBED
    else:
        kind = MessageType.UNSUBSCRIBED
    return WebSocketMessage(type=kind, data=data, id=event.request_id)


def pong(event: Ping) -> WebSocketMessage:
    return WebSocketMessage(type=MessageType.PONG, id=event.request_id)


def error_message(error: ProtocolError) -> WebSocketMessage:
    """The standardized ``error`` reply for a rejected frame."""
    return WebSocketMessage(
        type=MessageType.ERROR,
        data={"code": error.code.value, "message": error.detail},
        id=error.request_id,
    )


# -- heartbeats ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    """When to send heartbeats and when a silent connection counts as dead.

    The server sends a ``heartbeat`` every ``interval`` seconds; a connection that
    sent nothing (a ``pong`` or any other frame) for ``interval + timeout`` seconds
    is dead. Times come from a clock the caller passes in.
    """

    interval: float
    timeout: float

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("heartbeat interval and timeout must be positive")

    def is_dead(self, last_seen: float, now: float) -> bool:
        return now - last_seen > self.interval + self.timeout
