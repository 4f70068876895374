"""The standardized envelope every WebSocketService message travels in.

No I/O here: the envelope model, the message types, encoding once per broadcast,
splicing the broker-assigned sequence into an already encoded frame, and the JSON
Schema that front-end teams validate against.

Wire shape (one JSON object per text frame)::

    {"type": "training_progress", "data": {...}, "timestamp": "2026-...Z",
     "topic": "training", "seq": 42, "epoch": "k3x9", "id": "client-request-id"}

``topic``, ``seq``, ``epoch`` and ``id`` are omitted when they do not apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "EVENT_TYPE_PATTERN",
    "PROTOCOL_TYPES",
    "MessageType",
    "WebSocketMessage",
    "coerce_type",
    "encode",
    "envelope_json_schema",
    "register_message_types",
    "registered_types",
    "type_name",
    "utc_now_iso",
    "with_sequence",
]


class MessageType(StrEnum):
    """Every ``type`` a frame may carry.

    The first group is the migration guide's domain events; the second is the
    service's own control protocol (see :mod:`service.protocol`).
    """

    # Domain events (the migration guide's catalogue).
    TRAINING_STARTED = "training_started"
    TRAINING_PROGRESS = "training_progress"
    TRAINING_COMPLETED = "training_completed"
    TRAINING_FAILED = "training_failed"
    PHASE_UPDATE = "phase_update"
    MODEL_CREATED = "model_created"
    MODEL_UPDATED = "model_updated"
    MODEL_DELETED = "model_deleted"
    SYSTEM_STATUS = "system_status"
    CUSTOM = "custom"

    # The control protocol.
    CONNECTION_ESTABLISHED = "connection_established"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    PING = "ping"
    PONG = "pong"
    HEARTBEAT = "heartbeat"
    ERROR = "error"


#: Types that belong to the control protocol rather than to application events.
PROTOCOL_TYPES: frozenset[MessageType] = frozenset(
    {
        MessageType.CONNECTION_ESTABLISHED,
        MessageType.SUBSCRIBE,
        MessageType.UNSUBSCRIBE,
        MessageType.SUBSCRIBED,
        MessageType.UNSUBSCRIBED,
        MessageType.PING,
        MessageType.PONG,
        MessageType.HEARTBEAT,
        MessageType.ERROR,
    }
)


#: What an app-defined event type may look like (``job_done``, ``billing.invoice_paid``).
EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

#: App-defined event types registered for the published schema (see ``python -m service.schema``).
_REGISTERED: dict[str, None] = {}


def coerce_type(value: object) -> MessageType | str:
    """Return the well-known :class:`MessageType` for ``value``, else the validated app type.

    Apps have their own events (``job_done``, ``log_line``): any lowercase name
    matching :data:`EVENT_TYPE_PATTERN` is a valid type, so a backend never has to
    squeeze its events into the guide's ML catalogue. Raises ``ValueError`` otherwise.
    """
    if isinstance(value, MessageType):
        return value
    if not isinstance(value, str):
        raise ValueError(f"message type must be a string, not {type(value).__name__}")
    try:
        return MessageType(value)
    except ValueError:
        pass
    if EVENT_TYPE_PATTERN.fullmatch(value) is None:
        raise ValueError(
            f"invalid message type {value!r}: use lowercase letters, digits, '_', '.', '-' "
            "(starting with a letter, at most 64 characters)"
        )
    return value


def type_name(message_type: MessageType | str) -> str:
    """The wire name of a type, well-known or app-defined."""
    return str(message_type.value if isinstance(message_type, MessageType) else message_type)


def register_message_types(names: Iterable[str]) -> tuple[str, ...]:
    """Declare app event types so the published JSON Schema lists them; returns them."""
    added = []
    for name in names:
        kind = coerce_type(name)
        if isinstance(kind, MessageType) and kind in PROTOCOL_TYPES:
            raise ValueError(f"{name!r} is a protocol type, not an event type")
        _REGISTERED[type_name(kind)] = None
        added.append(type_name(kind))
    return tuple(added)


def registered_types() -> tuple[str, ...]:
    """App event types registered so far, in registration order."""
    return tuple(_REGISTERED)


def utc_now_iso() -> str:
    """Return the current time as ISO 8601 in UTC, the envelope's timestamp format."""
    return datetime.now(UTC).isoformat()


class WebSocketMessage(BaseModel):
    """One standardized message, as the migration guide constructs it.

    ``WebSocketMessage(type=..., data=..., timestamp=...)`` works exactly as in the
    guide; ``timestamp`` defaults to now. ``topic`` and ``seq`` are filled in by the
    service on broadcast (``seq`` is per topic and lets clients detect gaps; ``epoch``
    changes when the topic's history was lost). ``id`` echoes a client request id on
    replies so a client can pair them with its requests.
    """

    model_config = ConfigDict(frozen=True, use_enum_values=False, extra="forbid")

    type: MessageType | str
    data: dict[str, Any] = Field(default_factory=dict)
    timestamp: str = Field(default_factory=utc_now_iso)
    topic: str | None = None
    seq: int | None = None
    epoch: str | None = None
    id: str | None = None

    @field_validator("type", mode="plain")
    @classmethod
    def _known_or_app_type(cls, value: object) -> MessageType | str:
        return coerce_type(value)

    def to_wire(self) -> dict[str, Any]:
        """Return the JSON-ready dict sent on the wire (``None`` fields omitted)."""
        wire: dict[str, Any] = {
            "type": type_name(self.type),
            "data": self.data,
            "timestamp": self.timestamp,
        }
        if self.topic is not None:
            wire["topic"] = self.topic
        if self.seq is not None:
            wire["seq"] = self.seq
        if self.epoch is not None:
            wire["epoch"] = self.epoch
        if self.id is not None:
            wire["id"] = self.id
        return wire


def encode(message: WebSocketMessage) -> bytes:
    """Encode ``message`` to UTF-8 JSON bytes.

    Called once per broadcast, never per recipient. Raises :class:`TypeError` when
    ``data`` holds something JSON cannot represent.
    """
    return orjson.dumps(message.to_wire(), option=orjson.OPT_NON_STR_KEYS)


def with_sequence(payload: bytes, seq: int | None, epoch: str | None) -> bytes:
    """Return ``payload`` (an encoded envelope without seq/epoch) with both added.

    The broker assigns ``seq`` after the message was encoded; splicing the two
    fields onto the end of the object keeps the broadcast encoded once instead of
    decoding and re-encoding it. ``payload`` must come from :func:`encode` on a
    message whose ``seq`` and ``epoch`` were ``None``.
    """
    if seq is None:
        return payload
    if epoch is None:
        return payload[:-1] + b',"seq":%d}' % seq
    return payload[:-1] + b',"seq":%d,"epoch":%s}' % (seq, orjson.dumps(epoch))


def envelope_json_schema(extra_types: Iterable[str] = ()) -> dict[str, Any]:
    """Return the envelope's JSON Schema (draft 2020-12) for front-end validation.

    ``type`` lists the well-known types plus the app's registered ones (and
    ``extra_types``), so a front end validating against it learns the app's events.
    """
    schema = WebSocketMessage.model_json_schema()
    names = [t.value for t in MessageType]
    extra = [type_name(coerce_type(t)) for t in extra_types]
    app_types = [t for t in dict.fromkeys((*registered_types(), *extra)) if t not in names]
    listed = {"type": "string", "enum": names + app_types}
    if app_types:  # the app declared its events: exactly these
        schema["properties"]["type"] = {"title": "Type", **listed}
    else:  # undeclared app types are valid too
        pattern = {"type": "string", "pattern": f"^{EVENT_TYPE_PATTERN.pattern}$"}
        schema["properties"]["type"] = {"title": "Type", "anyOf": [listed, pattern]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "WebSocketMessage"
    return schema
