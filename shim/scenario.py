"""Replay scenarios: a small JSON file format for recorded WebSocket traffic.

A scenario says who is connected and what the producers broadcast, in order;
:mod:`shim.replay` plays it through the legacy manager and the new service and
compares what each client got. One file is one JSON object::

    {
      "name": "per_endpoint",                     # required; letters, digits, _ . -
      "description": "what this scenario shows",  # optional
      "endpoints": {                              # optional: topics that an endpoint's
        "/ws/training": {"topics": ["training"]}  # clients get on the new side (default:
      },                                          # every topic the translator knows)
      "expected": [                               # optional: declared differences
        {"kind": "missing", "endpoint": "/ws/training", "topic": "models",
         "reason": "the new side filters /ws/training"}
      ],
      "masks": ["data.eta"],                      # optional: paths ignored, beyond the
                                                  # differ's defaults (timestamp, seq, ...)
      "clients": [                                # at least one
        {"id": "old-1", "endpoint": "/ws", "format": "legacy"},
        {"id": "new-1", "endpoint": "/ws", "format": "envelope",
         "user_id": "u-7", "subscribe": ["models"]},
        {"id": "late-1", "endpoint": "/ws/training", "format": "legacy"}
      ],
      "timeline": [
        {"at": 0.0, "legacy": {"type": "training_update", "progress": 0.3}},
        {"at": 0.1, "new": {"type": "training_progress", "data": {"progress": 0.4},
                            "topic": "training"}},
        {"at": 0.2, "connect": "late-1"},
        {"at": 0.3, "disconnect": "old-1", "note": "steps may carry a note"}
      ]
    }

Fields:

- ``expected`` entries are :class:`~shim.diff.ExpectedDifference`: ``kind``
  (``missing``/``extra``/``field``/``order``/``overflow``) and optional ``type``,
  ``topic``, ``endpoint``, ``field`` (``field`` kind only) and ``reason``.
- A client's ``format`` is ``legacy`` (an old client: old payload shapes) or
  ``envelope`` (offers the ``envelope.v1`` subprotocol). ``user_id`` is sent as the
  ``?user_id=`` query parameter. ``subscribe`` (envelope clients only) lists topics
  the client subscribes to with ``subscribe`` frames right after connecting.
- A client is connected before the timeline starts unless a ``connect`` step
  names it; then it connects at that step. A client connects and disconnects at
  most once (reconnecting is a new client with another id).
- Each timeline step has exactly one of ``legacy`` (an old producer's
  ``manager.broadcast(payload)``; any JSON object), ``new`` (a new producer's
  ``service.broadcast(WebSocketMessage(type, data), topic)``; ``topic`` ``null`` or
  absent: every connection; an optional ``timestamp``), ``connect`` or
  ``disconnect`` (a client id).
- ``at`` (seconds, optional) documents when the step happened; steps replay in
  file order, without sleeping, so given values must not decrease.

:func:`load_scenario` raises :class:`ScenarioError` naming the file and the JSON
path of every problem (``$.timeline[3].new.type``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.messages import PROTOCOL_TYPES, MessageType, coerce_type, type_name
from service.protocol import TOPIC_PATTERN

from .diff import ExpectedDifference, MismatchKind
from .wire import WireFormat

__all__ = [
    "ClientSpec",
    "EndpointSpec",
    "ExpectedSpec",
    "NewMessage",
    "Scenario",
    "ScenarioError",
    "Step",
    "StepKind",
    "dump_scenario",
    "find_scenario_files",
    "load_scenario",
    "parse_scenario",
    "recorded_scenario",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class ScenarioError(Exception):
    """A scenario file that cannot be read or is not a valid scenario.

    ``source`` names the file (or ``"<scenario>"``); ``problems`` holds
    ``(JSON path, message)`` pairs, the path ``$`` for the whole document.
    """

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {where}: {what}" for where, what in self.problems]
        super().__init__("\n".join(lines) or f"{source}: invalid scenario")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_topic(topic: str) -> str:
    if TOPIC_PATTERN.fullmatch(topic) is None:
        raise ValueError(f"invalid topic {topic!r} (letters, digits and _.:/- only)")
    return topic


class EndpointSpec(_Model):
    """What one endpoint's clients get on the new side (``None``: the default topics)."""

    topics: tuple[str, ...] | None = None

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(_check_topic(t) for t in value)


class ExpectedSpec(_Model):
    """A declared difference; see :class:`~shim.diff.ExpectedDifference`."""

    kind: MismatchKind
    type: str | None = None
    topic: str | None = None
    endpoint: str | None = None
    field: str | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _field_only_for_field(self) -> ExpectedSpec:
        self.to_expected()  # raises ValueError with ExpectedDifference's own message
        return self

    def to_expected(self) -> ExpectedDifference:
        return ExpectedDifference(
            kind=self.kind,
            type=self.type,
            topic=self.topic,
            endpoint=self.endpoint,
            field=self.field,
            reason=self.reason,
        )


class ClientSpec(_Model):
    """One client: its id, endpoint, wire format and extra subscriptions."""

    id: str = Field(pattern=_NAME)
    endpoint: str = Field(pattern=r"^/")
    format: WireFormat
    user_id: str | None = Field(default=None, min_length=1)
    subscribe: tuple[str, ...] = ()

    @field_validator("subscribe")
    @classmethod
    def _topics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_topic(t) for t in value)

    @model_validator(mode="after")
    def _only_envelope_subscribes(self) -> ClientSpec:
        if self.subscribe and self.format is not WireFormat.ENVELOPE:
            raise ValueError("only envelope clients can subscribe (old clients cannot)")
        return self


class NewMessage(_Model):
    """A new producer's message: ``service.broadcast(WebSocketMessage(...), topic)``."""

    #: A well-known :class:`MessageType` or an app-defined name (``job_done``).
    type: MessageType | str
    data: dict[str, Any] = Field(default_factory=dict)
    topic: str | None = None
    timestamp: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _domain_type(cls, value: object) -> MessageType | str:
        kind = coerce_type(value)
        if kind in PROTOCOL_TYPES:
            raise ValueError(f"{type_name(kind)!r} is a protocol type, not a producer event")
        return kind

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else _check_topic(value)


class StepKind(StrEnum):
    LEGACY = "legacy"
    NEW = "new"
    CONNECT = "connect"
    DISCONNECT = "disconnect"


class Step(_Model):
    """One timeline step: exactly one of ``legacy``, ``new``, ``connect``, ``disconnect``."""

    at: float | None = Field(default=None, ge=0)
    note: str | None = None
    legacy: dict[str, Any] | None = None
    new: NewMessage | None = None
    connect: str | None = None
    disconnect: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [kind.value for kind in StepKind if getattr(self, kind.value) is not None]
        if len(given) != 1:
            got = ", ".join(given) or "none"
            raise ValueError(
                f"a step needs exactly one of legacy, new, connect, disconnect (got {got})"
            )
        return self

    @property
    def kind(self) -> StepKind:
        return next(kind for kind in StepKind if getattr(self, kind.value) is not None)

    @property
    def is_event(self) -> bool:
        """True for producer calls (``legacy``/``new``), False for connects and disconnects."""
        return self.legacy is not None or self.new is not None


class Scenario(_Model):
    """A validated scenario; see the module docstring for the format."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    endpoints: dict[str, EndpointSpec] = Field(default_factory=dict)
    expected: tuple[ExpectedSpec, ...] = ()
    masks: tuple[str, ...] = ()
    clients: tuple[ClientSpec, ...] = Field(min_length=1)
    timeline: tuple[Step, ...] = ()

    @field_validator("endpoints")
    @classmethod
    def _endpoint_paths(cls, value: dict[str, EndpointSpec]) -> dict[str, EndpointSpec]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"endpoint {path!r} must be a path starting with '/'")
        return value

    @field_validator("masks")
    @classmethod
    def _masks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for mask in value:
            if not mask or "" in mask.split("."):
                raise ValueError(f"mask {mask!r} has an empty segment")
        return value

    @property
    def events(self) -> int:
        """Producer calls in the timeline."""
        return sum(1 for step in self.timeline if step.is_event)

    def client(self, client_id: str) -> ClientSpec:
        """Return the client called ``client_id``; raises KeyError."""
        for spec in self.clients:
            if spec.id == client_id:
                return spec
        raise KeyError(client_id)

    def late_clients(self) -> frozenset[str]:
        """Clients that a ``connect`` step connects (the others connect up front)."""
        return frozenset(s.connect for s in self.timeline if s.connect is not None)

    def expected_differences(self) -> tuple[ExpectedDifference, ...]:
        return tuple(spec.to_expected() for spec in self.expected)


# -- loading -----------------------------------------------------------------------


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate one scenario file; raises :class:`ScenarioError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(source, [("$", f"cannot read: {exc}")]) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ScenarioError(source, [("$", f"not JSON: {exc.msg} at {where}")]) from exc
    return parse_scenario(document, source=source)


def parse_scenario(document: object, *, source: str = "<scenario>") -> Scenario:
    """Validate a decoded JSON document; raises :class:`ScenarioError`."""
    if not isinstance(document, dict):
        raise ScenarioError(source, [("$", "a scenario must be a JSON object")])
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as exc:
        problems = [(_json_path(error["loc"]), error["msg"]) for error in exc.errors()]
        raise ScenarioError(source, problems) from None
    problems = list(_cross_check(scenario))
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _cross_check(scenario: Scenario) -> Iterable[tuple[str, str]]:
    """What the models cannot see alone: ids, references, connect order, ``at``."""
    ids: set[str] = set()
    for i, spec in enumerate(scenario.clients):
        if spec.id in ids:
            yield f"$.clients[{i}].id", f"duplicate client id {spec.id!r}"
        ids.add(spec.id)
    connected = {spec.id for spec in scenario.clients} - scenario.late_clients()
    seen_connect: set[str] = set()
    gone: set[str] = set()
    last_at: float | None = None
    for i, step in enumerate(scenario.timeline):
        if step.at is not None:
            if last_at is not None and step.at < last_at:
                yield (
                    f"$.timeline[{i}].at",
                    f"{step.at} is earlier than the step before ({last_at})",
                )
            last_at = step.at
        if step.connect is not None:
            name = step.connect
            if name not in ids:
                yield f"$.timeline[{i}].connect", f"unknown client {name!r}"
            elif name in seen_connect:
                yield f"$.timeline[{i}].connect", f"client {name!r} connects twice"
            seen_connect.add(name)
            connected.add(name)
        if step.disconnect is not None:
            name = step.disconnect
            if name not in ids:
                yield f"$.timeline[{i}].disconnect", f"unknown client {name!r}"
            elif name in gone:
                yield f"$.timeline[{i}].disconnect", f"client {name!r} disconnects twice"
            elif name not in connected:
                yield f"$.timeline[{i}].disconnect", f"client {name!r} is not connected yet"
            gone.add(name)
            connected.discard(name)


def _json_path(loc: Sequence[int | str]) -> str:
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def find_scenario_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand files and directories (their ``*.json``, sorted, not recursive).

    Raises :class:`ScenarioError` for a path that does not exist or a directory
    without scenario files.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.json") if p.is_file())
            if not files:
                raise ScenarioError(str(path), [("$", "no *.json scenario files here")])
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise ScenarioError(str(path), [("$", "no such file or directory")])
    return found


# -- writing -----------------------------------------------------------------------


def dump_scenario(scenario: Scenario) -> str:
    """Return ``scenario`` as JSON for people: one line per client, step and declaration.

    Defaults are left out; the result loads back to an equal scenario.
    """
    document = scenario.model_dump(mode="json", exclude_defaults=True)
    lines = ["{"]
    for number, (key, value) in enumerate(document.items()):
        comma = "," if number < len(document) - 1 else ""
        if isinstance(value, list) and value:
            items = [f"    {_one_line(item)}" for item in value]
            lines += [f"  {json.dumps(key)}: [", ",\n".join(items), f"  ]{comma}"]
        elif isinstance(value, dict) and value:
            entries = [f"    {json.dumps(k)}: {_one_line(v)}" for k, v in value.items()]
            lines += [f"  {json.dumps(key)}: {{", ",\n".join(entries), f"  }}{comma}"]
        else:
            lines.append(f"  {json.dumps(key)}: {_one_line(value)}{comma}")
    return "\n".join([*lines, "}"]) + "\n"


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def recorded_scenario(
    *,
    name: str,
    endpoint: str,
    received: Sequence[tuple[float, dict[str, Any]]],
    description: str,
) -> Scenario:
    """A scenario replaying what an old client received: one legacy call per payload.

    ``received`` holds ``(seconds since connecting, payload)``. The scenario has
    one old and one envelope client on ``endpoint``, so a replay compares both
    formats. Raises :class:`ScenarioError` when ``name`` or a payload is invalid.
    """
    document = {
        "name": name,
        "description": description,
        "clients": [
            {"id": "old-1", "endpoint": endpoint, "format": WireFormat.LEGACY.value},
            {"id": "new-1", "endpoint": endpoint, "format": WireFormat.ENVELOPE.value},
        ],
        "timeline": [{"at": round(at, 3), "legacy": payload} for at, payload in received],
    }
    return parse_scenario(document, source=f"<recording {name}>")
