"""Replay scenarios through the legacy manager and the new service, in process.

:func:`replay` plays one :class:`~shim.scenario.Scenario` in one stage through a
fresh ``WebSocketService`` and ``CompatWebSocketManager``, with in-memory client
sockets, and returns a :class:`RunResult`::

    result = await replay(load_scenario("scenarios/catalogue.json"), Stage.SHADOW)
    result.failed          # unexpected mismatches or duplicate deliveries
    result.report          # the differ's DiffReport, connections named by client id

In ``shadow`` the legacy side delivers and the new side records; in ``live`` the
other way round; either way the differ compares both, connection by connection,
after a forced flush. Independently of the differ, every client must get every
event at most once: a timeline step that puts more than one event frame on one
client's socket is a :class:`Duplicate`.

:func:`break_rule` returns translation rules with one rule deliberately broken
(its mapped fields come back wrong to old clients), to show a comparison failing.
Many scenarios in several stages: :mod:`shim.comparison`; capturing traffic from
a running backend: :mod:`shim.record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service import WebSocketMessage, WebSocketService
from service.messages import PROTOCOL_TYPES

from .diff import DiffConfig, Differ, DiffReport
from .manager import CompatWebSocketManager
from .report import ABSENT, Mismatch
from .rules import default_rules
from .scenario import ClientSpec, Scenario, Step
from .stages import FixedStages, Stage
from .translate import FieldMap, TranslationError, TranslationRule, Translator
from .wire import ENVELOPE_SUBPROTOCOL, WireFormat

__all__ = [
    "COMPARED_STAGES",
    "ClientDelivery",
    "Duplicate",
    "ReplaySocket",
    "RunResult",
    "break_rule",
    "broken_value",
    "replay",
]

#: The stages in which both sides run and the differ compares them.
COMPARED_STAGES: tuple[Stage, ...] = (Stage.SHADOW, Stage.LIVE)

_PROTOCOL_TYPE_NAMES = frozenset(t.value for t in PROTOCOL_TYPES)
_SYNC = "__replay_sync__"


# -- the client double -------------------------------------------------------------


class ReplaySocket:
    """An in-memory client socket with what the shim reads from Starlette's WebSocket.

    Records every frame the client would have received (``frames``, as text) and
    splits them into ``events`` and protocol frames (``connection_established``,
    ``subscribed``... for envelope clients). ``push`` queues a client frame for
    ``receive``, the way a real client sends one.
    """

    def __init__(
        self, endpoint: str, *, wire_format: WireFormat, user_id: str | None = None
    ) -> None:
        offered = [ENVELOPE_SUBPROTOCOL] if wire_format is WireFormat.ENVELOPE else []
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "path": endpoint,
            "subprotocols": offered,
        }
        self.query_params: dict[str, str] = {} if user_id is None else {"user_id": user_id}
        self.headers: dict[str, str] = {}
        self.format = wire_format
        self.accepted = False
        self.subprotocol: str | None = None
        self.closed: tuple[int, str | None] | None = None
        self.frames: list[str] = []
        self.events: list[str] = []
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def accept(self, subprotocol: str | None = None) -> None:
        self.accepted = True
        self.subprotocol = subprotocol

    async def send_text(self, data: str) -> None:
        self.frames.append(data)
        if not self._is_protocol(data):
            self.events.append(data)

    async def send_json(self, data: Any, mode: str = "text") -> None:
        await self.send_text(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode())

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)

    def push(self, text: str) -> None:
        """Queue a text frame from the client for :meth:`receive`."""
        self._inbox.put_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    def _is_protocol(self, text: str) -> bool:
        if self.format is not WireFormat.ENVELOPE:
            return False  # an old client gets payloads only
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        return isinstance(value, dict) and value.get("type") in _PROTOCOL_TYPE_NAMES


# -- results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A client that got more than one event frame for one timeline step."""

    client: str
    step: int  #: index in the timeline
    kind: str  #: the step's kind (``legacy``, ``new``...)
    frames: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"client {self.client} got {len(self.frames)} event frames for"
            f" timeline[{self.step}] ({self.kind}); each event must arrive at most once"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "step": self.step,
            "kind": self.kind,
            "frames": list(self.frames),
        }


@dataclass(frozen=True, slots=True)
class ClientDelivery:
    """What reached one client's socket."""

    client: str
    endpoint: str
    format: str
    events: int  #: event frames delivered
    protocol: int  #: protocol frames (connection_established, subscribed...)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunResult:
    """One scenario replayed in one stage.

    ``report`` is the differ's report with each mismatch's ``connection`` replaced
    by the scenario's client id. ``failed`` is True on any unexpected mismatch or
    duplicate delivery.
    """

    scenario: str
    stage: Stage
    report: DiffReport
    clients: tuple[ClientDelivery, ...]
    duplicates: tuple[Duplicate, ...]
    events: int
    untranslated: int  #: legacy producer calls no translation rule matched
    translation: dict[str, Any]
    shim_counters: dict[str, int]
    seconds: float

    def _total(self, key: str) -> int:
        return sum(counts.get(key, 0) for counts in self.report.counters.values())

    @property
    def compared(self) -> int:
        return self._total("compared")

    @property
    def matched(self) -> int:
        return self._total("matched")

    @property
    def unexpected(self) -> int:
        return self.report.unexpected_total

    @property
    def expected(self) -> int:
        return self._total("expected")

    @property
    def failed(self) -> bool:
        return self.unexpected > 0 or bool(self.duplicates)

    def failure_text(self, *, limit: int | None = None) -> str:
        """Every unexpected mismatch (both payloads) and duplicate, as plain text."""
        lines = []
        shown = self.report.mismatches if limit is None else self.report.mismatches[:limit]
        for number, mismatch in enumerate(shown, start=1):
            lines += _mismatch_text(number, mismatch)
        hidden = self.unexpected - len(shown)
        if hidden > 0:
            lines.append(f"  ... {hidden} more unexpected mismatch(es); see the JSON report")
        lines += [f"  DUPLICATE: {duplicate.describe()}" for duplicate in self.duplicates]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "failed": self.failed,
            "events": self.events,
            "compared": self.compared,
            "matched": self.matched,
            "unexpected": self.unexpected,
            "expected": self.expected,
            "untranslated": self.untranslated,
            "seconds": round(self.seconds, 4),
            "clients": [client.to_dict() for client in self.clients],
            "duplicates": [duplicate.to_dict() for duplicate in self.duplicates],
            "translation": self.translation,
            "shim_counters": self.shim_counters,
            "report": self.report.to_dict(),
        }


# -- replaying -----------------------------------------------------------------------


async def replay(
    scenario: Scenario,
    stage: Stage = Stage.SHADOW,
    *,
    rules: Sequence[TranslationRule] | None = None,
) -> RunResult:
    """Play ``scenario`` with every endpoint in ``stage`` and compare both sides.

    ``rules`` replaces the default translation rules (see :func:`break_rule`).
    Everything runs on the current event loop against fresh objects, without
    sleeping; the differ settles everything when the replay ends. Raises
    ``ValueError`` when ``stage`` does not compare (``legacy``/``new``).
    """
    if not stage.compares:
        raise ValueError(f"stage {stage.value!r} runs one side only; replay shadow or live")
    started = time.perf_counter()
    differ = Differ(
        DiffConfig(
            masks=(*DiffConfig().masks, *scenario.masks),
            expected=scenario.expected_differences(),
            settle_seconds=0.05,
            max_pending=1_000_000,
            ring_size=100_000,
            log_per_second=0,  # the replay reports every mismatch itself
        )
    )
    translator = Translator(rules=rules)
    service = WebSocketService(heartbeat_interval=None)
    manager = CompatWebSocketManager(
        service=service,
        decider=FixedStages(default=stage),
        translator=translator,
        differ=differ,
        endpoint_topics={
            name: spec.topics for name, spec in scenario.endpoints.items() if spec.topics
        },
        diff_flush_interval=3600.0,  # no periodic flush: the replay settles once, at the end
    )
    player = _Player(scenario, manager, service)
    try:
        await player.run()
        await manager.stop()
        report = differ.report()
    finally:
        manager.close()
        await service.stop(timeout=1.0)
    return RunResult(
        scenario=scenario.name,
        stage=stage,
        report=DiffReport(
            report.counters,
            [player.rename(mismatch) for mismatch in report.mismatches],
            report.generated_at,
        ),
        clients=player.deliveries(),
        duplicates=tuple(player.duplicates),
        events=scenario.events,
        untranslated=_untranslated(scenario, rules),
        translation=translator.stats(),
        shim_counters=dict(manager.stats()["counters"]),
        seconds=time.perf_counter() - started,
    )


def _untranslated(scenario: Scenario, rules: Sequence[TranslationRule] | None) -> int:
    """Legacy producer calls that no rule matches (the translator counts every call)."""
    probe = Translator(rules=rules)
    count = 0
    for step in scenario.timeline:
        if step.legacy is not None:
            # A payload that fails to translate is counted by the replay's translator.
            with contextlib.suppress(TranslationError):
                count += probe.to_standard(step.legacy).untranslated
    return count


class _Player:
    """Feeds one scenario's timeline to a manager and watches every client socket."""

    def __init__(
        self, scenario: Scenario, manager: CompatWebSocketManager, service: WebSocketService
    ) -> None:
        self.scenario = scenario
        self.manager = manager
        self.service = service
        self.sockets: dict[str, ReplaySocket] = {}
        self.names: dict[str, str] = {}  # service connection id -> client id
        self.duplicates: list[Duplicate] = []

    async def run(self) -> None:
        late = self.scenario.late_clients()
        for spec in self.scenario.clients:
            if spec.id not in late:
                await self._connect(spec)
        for index, step in enumerate(self.scenario.timeline):
            before = {name: len(socket.events) for name, socket in self.sockets.items()}
            await self._play(step)
            # Delivery is synchronous with the memory broker; yield anyway so that
            # anything deferred (disconnect tasks) lands within this step.
            for _ in range(3):
                await asyncio.sleep(0)
            for name, socket in self.sockets.items():
                new = socket.events[before.get(name, 0) :]
                if len(new) > 1:
                    self.duplicates.append(Duplicate(name, index, step.kind.value, tuple(new)))

    async def _play(self, step: Step) -> None:
        if step.legacy is not None:
            await self.manager.broadcast(copy.deepcopy(step.legacy))
        elif step.new is not None:
            new = step.new
            fields: dict[str, Any] = {"type": new.type, "data": copy.deepcopy(new.data)}
            if new.timestamp is not None:
                fields["timestamp"] = new.timestamp
            await self.service.broadcast(WebSocketMessage(**fields), topic=new.topic)
        elif step.connect is not None:
            await self._connect(self.scenario.client(step.connect))
        elif step.disconnect is not None:
            self.manager.disconnect(self.sockets[step.disconnect])

    async def _connect(self, spec: ClientSpec) -> None:
        socket = ReplaySocket(spec.endpoint, wire_format=spec.format, user_id=spec.user_id)
        self.sockets[spec.id] = socket
        await self.manager.connect(socket)
        for route in self.manager.routes():
            if route.websocket is socket:
                self.names[route.connection_id] = spec.id
        if spec.subscribe:
            # As a real client does: subscribe frames, answered by the shim's
            # interceptor inside receive(); the sync frame is what the endpoint sees.
            for number, topic in enumerate(spec.subscribe):
                frame = {"type": "subscribe", "data": {"topic": topic}, "id": f"replay-{number}"}
                socket.push(orjson.dumps(frame).decode())
            socket.push(_SYNC)
            received = await asyncio.wait_for(socket.receive(), 5.0)
            acks = [f for f in socket.frames if orjson.loads(f).get("type") == "subscribed"]
            if received.get("text") != _SYNC or len(acks) != len(spec.subscribe):
                # The shim no longer answers subscribe frames: a regression, not a diff.
                raise RuntimeError(f"{spec.id}: subscribing failed; frames: {socket.frames}")

    def rename(self, mismatch: Mismatch) -> Mismatch:
        name = self.names.get(mismatch.connection, mismatch.connection)
        return dataclasses.replace(mismatch, connection=name)

    def deliveries(self) -> tuple[ClientDelivery, ...]:
        delivered = []
        for spec in self.scenario.clients:
            socket = self.sockets.get(spec.id)
            frames, events = (0, 0) if socket is None else (len(socket.frames), len(socket.events))
            delivered.append(
                ClientDelivery(spec.id, spec.endpoint, spec.format.value, events, frames - events)
            )
        return tuple(delivered)


# -- a deliberately broken rule --------------------------------------------------------


def broken_value(rule_name: str) -> str:
    """What every mapped field of a rule broken by :func:`break_rule` comes back as."""
    return f"<broken by break_rule({rule_name})>"


def break_rule(
    name: str, rules: Iterable[TranslationRule] | None = None
) -> tuple[TranslationRule, ...]:
    """Return ``rules`` (default: the default rules) with rule ``name`` broken.

    The broken rule translates to the standardized message as before, but on the
    way back to the old shape each mapped field comes back as :func:`broken_value`:
    old clients served by the new side get wrong payloads, which a comparison
    must report. Fields that identify an event (the differ's correlation keys,
    ``session_id`` and ``model_id``) stay intact while others exist, so the differ
    pairs the two events and names the broken fields. Raises ``ValueError`` for an
    unknown rule name (the message lists the known ones) or a rule without fields.
    """
    rules = tuple(default_rules() if rules is None else rules)
    known = [rule.name for rule in rules]
    if name not in known:
        raise ValueError(f"unknown translation rule {name!r}; known: {', '.join(known)}")
    return tuple(_broken(rule) if rule.name == name else rule for rule in rules)


def _broken(rule: TranslationRule) -> TranslationRule:
    specs = [_as_field_map(spec) for spec in rule.fields]
    if not specs:
        raise ValueError(f"rule {rule.name!r} maps no fields; nothing to break")
    keys = set(DiffConfig().correlation_keys)
    targets = [spec for spec in specs if spec.standard not in keys] or specs
    wrong = broken_value(rule.name)

    def corrupt(value: Any) -> Any:
        return wrong

    fields = tuple(
        FieldMap(spec.legacy, spec.standard, spec.forward, corrupt) if spec in targets else spec
        for spec in specs
    )
    return dataclasses.replace(rule, fields=fields)


def _as_field_map(spec: str | tuple[str, str] | FieldMap) -> FieldMap:
    if isinstance(spec, FieldMap):
        return spec
    if isinstance(spec, str):
        return FieldMap(spec, spec)
    return FieldMap(spec[0], spec[1])


def _mismatch_text(number: int, mismatch: Mismatch) -> list[str]:
    topic = f", topic {mismatch.topic}" if mismatch.topic is not None else ""
    lines = [
        f"  {number}. {mismatch.kind.value.upper()} {mismatch.type or '?'} on"
        f" {mismatch.endpoint}{topic}, client {mismatch.connection}: {mismatch.reason}"
    ]
    for diff in mismatch.fields:
        lines.append(f"     {diff.path}: legacy {_compact(diff.legacy)} | new {_compact(diff.new)}")
    for label, payload in (("legacy", mismatch.legacy), ("new", mismatch.new)):
        shown = "(not delivered)" if payload is None else _compact(dict(payload))
        lines.append(f"     {label + ':':<7} {shown}")
    return lines


def _compact(value: Any) -> str:
    return "(absent)" if value is ABSENT else _dumps(value, indent=False)


def _dumps(value: Any, *, indent: bool) -> str:
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=repr, option=option).decode()
