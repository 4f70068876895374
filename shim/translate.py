"""Translation between legacy payloads and standardized messages, both ways, by rules.

Each legacy payload shape (see :mod:`legacy.producers`) has one declarative
:class:`TranslationRule`: how to recognise it, which :class:`MessageType` and topic
it becomes, and which legacy field becomes which ``data`` key. A
:class:`Translator` applies them::

    translator = Translator()                              # the default rules
    translation = translator.to_standard(payload)          # legacy dict -> message
    await service.broadcast(translation.message, topic=translation.message.topic)
    translator.to_legacy(message_or_wire_dict)             # message -> legacy dict | None

Round trip
----------
``to_legacy(to_standard(p).message) == p`` for every JSON-serializable dict ``p``,
whether a rule matches it or not (also through the message's wire form and
through JSON, as far as JSON preserves ``p`` itself). Nothing is dropped:

- mapped fields move to their ``data`` key (dotted paths nest on either side);
- the rule's legacy timestamp field (a string) becomes the envelope ``timestamp``;
- ``data["extra"]`` carries every legacy field the rule does not know, unchanged
  (including a non-string timestamp and a constant field whose value differs);
- ``data["omitted"]`` lists the fields ``to_legacy`` would otherwise fill in (the
  timestamp, a constant field) but which the original payload did not have;
- a rule's ``data_constants`` are added to ``data``; they say which of several
  legacy shapes of one type a message came from (e.g. ``phase_update`` with
  ``status`` ``"started"`` is a ``phase_change``);
- an unknown shape becomes ``custom`` on ``untranslated_topic`` with the whole
  payload as ``data["legacy"]``, is counted, and comes back unchanged.

The other direction is best effort: ``to_legacy`` renders a new producer's message
in the old shape of the type's default rule (the first registered one without
``data_constants``, unless another rule's constants match). ``data`` keys the
rule does not know go to the top level of the legacy payload, so
``to_standard`` then returns them under ``extra``; a key that would overwrite a
field the rule set is dropped and counted as a collision. Protocol messages,
types without a rule (``model_deleted``) and ``custom`` messages that do not wrap
a legacy payload have no legacy counterpart: ``to_legacy`` returns ``None``.

Units: legacy ``progress`` is a fraction in ``[0, 1]``, the unit of the
standardized ``progress``, so it is copied unchanged (a scaled copy could not
round-trip exactly through floats).

Exceptions::

    TranslationError   a payload or message cannot be translated (has ``rule``, ``reason``)

Rule definitions that contradict themselves raise ``ValueError`` when constructed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from service.messages import PROTOCOL_TYPES, MessageType, WebSocketMessage, utc_now_iso
from service.protocol import TOPIC_PATTERN

__all__ = [
    "DEFAULT_UNTRANSLATED_TOPIC",
    "EXTRA_KEY",
    "LEGACY_KEY",
    "MODELS",
    "OMITTED_KEY",
    "PROGRESS_FIELDS",
    "SYSTEM",
    "TRAINING",
    "FieldMap",
    "Translation",
    "TranslationError",
    "TranslationRule",
    "Translator",
    "default_rules",
]

#: ``data`` key carrying the legacy fields a rule does not map.
EXTRA_KEY: Final = "extra"
#: ``data`` key listing the legacy fields the original payload did not have.
OMITTED_KEY: Final = "omitted"
#: ``data`` key of a ``custom`` message carrying an untranslated legacy payload.
LEGACY_KEY: Final = "legacy"
#: Where untranslated payloads are published unless configured otherwise.
DEFAULT_UNTRANSLATED_TOPIC: Final = "custom"

_RESERVED_DATA_KEYS = frozenset({EXTRA_KEY, OMITTED_KEY})

Converter = Callable[[Any], Any]
_Path = tuple[str, ...]


class TranslationError(Exception):
    """A payload or message that cannot be translated.

    ``rule`` names the rule that failed, ``None`` when the input itself is
    unusable (not a dict, not JSON-serializable, not a standardized message).
    ``reason`` says what went wrong; the original exception, if any, is the
    ``__cause__``.
    """

    def __init__(self, rule: str | None, reason: str) -> None:
        super().__init__(reason if rule is None else f"rule {rule!r}: {reason}")
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One legacy field <-> one ``data`` key; dotted paths address nested dicts.

    ``forward`` converts the legacy value, ``backward`` the standardized one
    (identity when ``None``). They must be exact inverses of each other, or the
    round trip breaks; whatever they raise becomes a :class:`TranslationError`.
    """

    legacy: str
    standard: str
    forward: Converter | None = None
    backward: Converter | None = None


class _Field(NamedTuple):
    legacy: _Path
    standard: _Path
    forward: Converter | None
    backward: Converter | None


@dataclass(frozen=True, slots=True)
class TranslationRule:
    """How one legacy payload shape maps to a standardized message and back.

    - ``name``: unique; also the shape's name in :mod:`legacy.catalogue`.
    - ``message_type``/``topic``: what the shape becomes.
    - ``discriminator``: ``(field, value)``, e.g. ``("type", "training_update")``;
      the rule matches a payload whose top-level ``field`` equals ``value``.
    - ``requires``: for shapes with no discriminator: top-level fields that must
      be present; such a rule only matches a payload that carries none of the
      translator's discriminator fields. Exactly one of the two is given.
    - ``fields``: ``"name"`` (same on both sides), ``("legacy.path", "data.path")``
      or a :class:`FieldMap`.
    - ``constants``: top-level legacy fields with a fixed value (JSON scalars),
      rebuilt by ``to_legacy``.
    - ``data_constants``: ``data`` entries (JSON scalars) added by ``to_standard``;
      ``to_legacy`` prefers the rule whose ``data_constants`` all match.
    - ``timestamp_field``: the legacy field holding the event time (``None``: none).
    """

    name: str
    message_type: MessageType
    topic: str
    discriminator: tuple[str, str] | None = None
    requires: tuple[str, ...] = ()
    fields: tuple[str | tuple[str, str] | FieldMap, ...] = ()
    constants: Mapping[str, Any] = field(default_factory=dict)
    data_constants: Mapping[str, Any] = field(default_factory=dict)
    timestamp_field: str | None = "timestamp"
    _fields: tuple[_Field, ...] = field(init=False, repr=False, compare=False)
    _legacy_constants: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = tuple(_compile(spec) for spec in self.fields)
        legacy_constants = dict(self.constants)
        if self.discriminator is not None:
            legacy_constants = {self.discriminator[0]: self.discriminator[1], **legacy_constants}
        object.__setattr__(self, "_fields", compiled)
        object.__setattr__(self, "_legacy_constants", legacy_constants)
        problems = self._problems()
        if problems:
            raise ValueError(f"translation rule {self.name!r}: {'; '.join(problems)}")

    def _problems(self) -> list[str]:
        problems: list[str] = []
        if not self.name:
            problems.append("name must not be empty")
        if TOPIC_PATTERN.fullmatch(self.topic) is None:
            problems.append(f"invalid topic {self.topic!r}")
        if self.message_type in PROTOCOL_TYPES or self.message_type is MessageType.CUSTOM:
            problems.append(f"{self.message_type.value!r} is not a domain event type")
        if (self.discriminator is None) == (not self.requires):
            problems.append("give exactly one of discriminator and requires")
        if self.discriminator is not None and self.discriminator[0] in self.constants:
            problems.append("the discriminator field is also a constant")
        if self.timestamp_field is not None and self.timestamp_field in self._legacy_constants:
            problems.append("the timestamp field is also a constant")
        for name, value in (*self.constants.items(), *self.data_constants.items()):
            if not _is_scalar(value):
                problems.append(f"constant {name!r} must be a JSON scalar")
        fixed = set(self._legacy_constants) | {self.timestamp_field}
        legacy_paths = [f.legacy for f in self._fields]
        standard_paths = [f.standard for f in self._fields]
        problems += _overlaps("legacy", legacy_paths)
        problems += _overlaps("data", standard_paths)
        for path in legacy_paths:
            if path[0] in fixed:
                problems.append(f"legacy field {'.'.join(path)!r} is a constant or the timestamp")
        reserved = _RESERVED_DATA_KEYS | set(self.data_constants)
        for path in standard_paths:
            if path[0] in reserved:
                problems.append(f"data key {'.'.join(path)!r} is reserved or a data constant")
        problems += [
            f"data constant {k!r} is reserved"
            for k in _RESERVED_DATA_KEYS & set(self.data_constants)
        ]
        return problems


@dataclass(frozen=True, slots=True)
class Translation:
    """The result of :meth:`Translator.to_standard`.

    ``message`` has ``topic`` set and ``seq``/``epoch``/``id`` unset; ``rule`` is
    the matching rule's name, ``None`` when no rule matched (``untranslated``).
    """

    message: WebSocketMessage
    rule: str | None

    @property
    def untranslated(self) -> bool:
        """True when no rule matched and the payload was wrapped in ``custom``."""
        return self.rule is None

    @property
    def topic(self) -> str:
        """The topic to broadcast ``message`` on."""
        assert self.message.topic is not None  # to_standard always sets it
        return self.message.topic


class Translator:
    """Applies translation rules; counts what it translated.

    Keyword-only configuration: ``rules`` (default :func:`default_rules`),
    ``untranslated_topic`` for payloads no rule matches (default ``"custom"``),
    ``clock`` returning the envelope timestamp for payloads without one.
    Raises ``ValueError`` for duplicate rule names or discriminators, or an
    invalid topic. Not thread-safe (the counters); one per event loop.
    """

    def __init__(
        self,
        *,
        rules: Iterable[TranslationRule] | None = None,
        untranslated_topic: str = DEFAULT_UNTRANSLATED_TOPIC,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        if TOPIC_PATTERN.fullmatch(untranslated_topic) is None:
            raise ValueError(f"invalid untranslated_topic {untranslated_topic!r}")
        self._rules = tuple(default_rules() if rules is None else rules)
        self.untranslated_topic = untranslated_topic
        self._clock = clock
        self._by_discriminator: dict[str, dict[str, TranslationRule]] = {}
        self._keyless: list[TranslationRule] = []
        reverse: dict[MessageType, list[TranslationRule]] = {}
        names: set[str] = set()
        for rule in self._rules:
            if rule.name in names:
                raise ValueError(f"duplicate translation rule name {rule.name!r}")
            names.add(rule.name)
            if rule.discriminator is None:
                self._keyless.append(rule)
            else:
                key, value = rule.discriminator
                by_value = self._by_discriminator.setdefault(key, {})
                if value in by_value:
                    raise ValueError(
                        f"rules {by_value[value].name!r} and {rule.name!r} both "
                        f"match {key} == {value!r}"
                    )
                by_value[value] = rule
            reverse.setdefault(rule.message_type, []).append(rule)
        # Most specific first; sorted() is stable, so ties keep registration order.
        self._reverse = {
            t: tuple(sorted(rs, key=lambda r: -len(r.data_constants))) for t, rs in reverse.items()
        }
        self._matched: Counter[str] = Counter({rule.name: 0 for rule in self._rules})
        self._untranslated = 0
        self._errors = 0
        self._collisions = 0

    @property
    def rules(self) -> tuple[TranslationRule, ...]:
        """The rules, in registration order."""
        return self._rules

    def topics(self) -> tuple[str, ...]:
        """Every topic a translated payload can land on, ``untranslated_topic`` last."""
        seen = dict.fromkeys(rule.topic for rule in self._rules)
        seen[self.untranslated_topic] = None
        return tuple(seen)

    def stats(self) -> dict[str, Any]:
        """Return ``{"rules": {name: n}, "untranslated": n, "errors": n, "collisions": n}``.

        ``rules`` counts ``to_standard`` matches per rule (every rule listed);
        ``errors`` counts TranslationErrors raised in either direction;
        ``collisions`` counts data keys ``to_legacy`` had to drop.
        """
        return {
            "rules": dict(self._matched),
            "untranslated": self._untranslated,
            "errors": self._errors,
            "collisions": self._collisions,
        }

    # -- legacy -> standard ----------------------------------------------------------

    def to_standard(self, payload: dict[str, Any]) -> Translation:
        """Translate a legacy payload; never drops it (unknown shapes become ``custom``).

        The rule is found by a dict lookup on each discriminator field's value
        (then the few rules without one are tried in order). Raises
        :class:`TranslationError` when ``payload`` is not a dict, is not
        JSON-serializable, or the matching rule raises. The payload is not
        modified; the message may share nested values with it.
        """
        if not isinstance(payload, dict):
            self._errors += 1
            raise TranslationError(None, f"payload must be a dict, not {type(payload).__name__}")
        try:
            orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            self._errors += 1
            raise TranslationError(None, f"payload is not JSON-serializable: {exc}") from exc
        rule = self._match(payload)
        if rule is None:
            self._untranslated += 1
            stamp = payload.get("timestamp")
            return Translation(
                _message(
                    MessageType.CUSTOM,
                    {LEGACY_KEY: payload},
                    stamp if isinstance(stamp, str) else self._clock(),
                    self.untranslated_topic,
                ),
                None,
            )
        try:
            data, stamp = _forward(rule, payload)
        except Exception as exc:
            self._errors += 1
            raise TranslationError(rule.name, f"{type(exc).__name__}: {exc}") from exc
        self._matched[rule.name] += 1
        message = _message(
            rule.message_type, data, stamp if stamp is not None else self._clock(), rule.topic
        )
        return Translation(message, rule.name)

    def _match(self, payload: dict[str, Any]) -> TranslationRule | None:
        discriminated = False
        for key, by_value in self._by_discriminator.items():
            if key in payload:
                discriminated = True
                value = payload[key]
                rule = by_value.get(value) if isinstance(value, str) else None
                if rule is not None:
                    return rule
        if discriminated:
            return None  # a discriminated shape no rule knows is not a keyless one
        for rule in self._keyless:
            if all(key in payload for key in rule.requires):
                return rule
        return None

    # -- standard -> legacy ----------------------------------------------------------

    def to_legacy(self, message: WebSocketMessage | Mapping[str, Any]) -> dict[str, Any] | None:
        """Return the payload a legacy client would have received, or ``None``.

        ``message`` is a :class:`WebSocketMessage` or its wire dict (``topic``,
        ``seq``, ``epoch`` and ``id`` are ignored). ``None``: protocol messages,
        types without a rule, ``custom`` messages not wrapping a legacy payload
        (a wrapped one is returned as is). Raises :class:`TranslationError` for a
        malformed wire dict or a rule that raises.
        """
        message_type, data, stamp = self._read(message)
        if message_type in PROTOCOL_TYPES:
            return None
        if message_type is MessageType.CUSTOM:
            original = data.get(LEGACY_KEY)
            return original if isinstance(original, dict) else None
        rule = self._reverse_rule(message_type, data)
        if rule is None:
            return None
        try:
            payload, collisions = _backward(rule, data, stamp)
        except Exception as exc:
            self._errors += 1
            raise TranslationError(rule.name, f"{type(exc).__name__}: {exc}") from exc
        self._collisions += collisions
        return payload

    def _read(
        self, message: WebSocketMessage | Mapping[str, Any]
    ) -> tuple[MessageType, dict[str, Any], str]:
        if isinstance(message, WebSocketMessage):
            return message.type, message.data, message.timestamp
        if not isinstance(message, Mapping):
            self._errors += 1
            raise TranslationError(
                None, f"expected a message or a wire dict, not {type(message).__name__}"
            )
        raw_type, data, stamp = (
            message.get("type"),
            message.get("data", {}),
            message.get("timestamp"),
        )
        try:
            message_type = MessageType(raw_type) if isinstance(raw_type, str) else None
        except ValueError:
            message_type = None
        if message_type is None:
            self._errors += 1
            raise TranslationError(None, f"unknown message type {raw_type!r}")
        if not isinstance(data, dict):
            self._errors += 1
            raise TranslationError(None, f"data must be a dict, not {type(data).__name__}")
        return message_type, data, stamp if isinstance(stamp, str) else self._clock()

    def _reverse_rule(
        self, message_type: MessageType, data: dict[str, Any]
    ) -> TranslationRule | None:
        for rule in self._reverse.get(message_type, ()):
            if all(k in data and _same(data[k], v) for k, v in rule.data_constants.items()):
                return rule
        return None


# -- the two directions, as plain functions over one rule ---------------------------------


def _forward(rule: TranslationRule, payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Return ``(data, timestamp or None)`` for a payload ``rule`` matched."""
    remaining = dict(payload)
    omitted: list[str] = []
    for key, value in rule._legacy_constants.items():
        if key not in remaining:
            omitted.append(key)
        elif _same(remaining[key], value):
            del remaining[key]
    stamp = None
    if rule.timestamp_field is not None:
        if rule.timestamp_field not in remaining:
            omitted.append(rule.timestamp_field)
        elif isinstance(remaining[rule.timestamp_field], str):
            stamp = remaining.pop(rule.timestamp_field)
    data: dict[str, Any] = {}
    for spec in rule._fields:
        found, value = _pop_path(remaining, spec.legacy)
        if found:
            _set_path(data, spec.standard, value if spec.forward is None else spec.forward(value))
    data.update(rule.data_constants)
    if remaining:
        data[EXTRA_KEY] = remaining
    if omitted:
        data[OMITTED_KEY] = omitted
    return data, stamp


def _backward(
    rule: TranslationRule, data: dict[str, Any], stamp: str
) -> tuple[dict[str, Any], int]:
    """Return ``(legacy payload, collisions)`` for a message ``rule`` was chosen for."""
    leftover = dict(data)
    for key in rule.data_constants:
        leftover.pop(key, None)
    omitted = leftover.get(OMITTED_KEY)
    if isinstance(omitted, list) and all(isinstance(k, str) for k in omitted):
        del leftover[OMITTED_KEY]
    else:
        omitted = []
    extra = leftover.get(EXTRA_KEY)
    if isinstance(extra, dict):
        del leftover[EXTRA_KEY]
    else:
        extra = {}
    payload = {k: v for k, v in rule._legacy_constants.items() if k not in omitted}
    if rule.timestamp_field is not None and rule.timestamp_field not in omitted:
        payload[rule.timestamp_field] = stamp
    payload.update(extra)  # restores a differing constant or a non-string timestamp
    collisions = 0
    for spec in rule._fields:
        found, value = _pop_path(leftover, spec.standard)
        if found:
            value = value if spec.backward is None else spec.backward(value)
            collisions += _set_path(payload, spec.legacy, value)
    for key, value in leftover.items():
        if key in payload:
            collisions += 1
        else:
            payload[key] = value
    if rule.discriminator is not None:
        key, value = rule.discriminator
        if not _same(payload.get(key), value):
            collisions += key in payload
            payload[key] = value
    return payload, collisions


def _message(
    message_type: MessageType, data: dict[str, Any], stamp: str, topic: str
) -> WebSocketMessage:
    return WebSocketMessage(type=message_type, data=data, timestamp=stamp, topic=topic)


# -- small helpers --------------------------------------------------------------------------


def _compile(spec: str | tuple[str, str] | FieldMap) -> _Field:
    if isinstance(spec, FieldMap):
        return _Field(_path(spec.legacy), _path(spec.standard), spec.forward, spec.backward)
    if isinstance(spec, str):
        return _Field(_path(spec), _path(spec), None, None)
    legacy, standard = spec
    return _Field(_path(legacy), _path(standard), None, None)


def _path(dotted: str) -> _Path:
    path = tuple(dotted.split("."))
    if not all(path):
        raise ValueError(f"invalid field path {dotted!r}")
    return path


def _overlaps(side: str, paths: list[_Path]) -> list[str]:
    problems = []
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            short, long = (a, b) if len(a) <= len(b) else (b, a)
            if long[: len(short)] == short:
                problems.append(f"{side} paths {'.'.join(a)!r} and {'.'.join(b)!r} overlap")
    return problems


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _same(a: object, b: object) -> bool:
    """Equal and of the same type (``1``, ``1.0`` and ``True`` are different payloads)."""
    return type(a) is type(b) and a == b


def _pop_path(root: dict[Any, Any], path: _Path) -> tuple[bool, Any]:
    """Remove ``path`` from ``root`` and return ``(found, value)``.

    Nested dicts along the path are copied before they are changed (the
    caller's payload is never mutated); a dict left empty by the removal is
    removed too, while one that was empty to begin with stays.
    """
    head = path[0]
    if head not in root:
        return False, None
    if len(path) == 1:
        return True, root.pop(head)
    child = root[head]
    if not isinstance(child, dict):
        return False, None
    child = dict(child)
    found, value = _pop_path(child, path[1:])
    if found:
        if child:
            root[head] = child
        else:
            del root[head]
    return found, value


def _set_path(root: dict[Any, Any], path: _Path, value: Any) -> bool:
    """Set ``path`` in ``root``, copying nested dicts; True if something was overwritten."""
    overwrote = False
    node = root
    for key in path[:-1]:
        child = node.get(key)
        if isinstance(child, dict):
            child = dict(child)
        else:
            overwrote = overwrote or key in node
            child = {}
        node[key] = child
        node = child
    overwrote = overwrote or path[-1] in node
    node[path[-1]] = value
    return overwrote


# -- the default rules: one per shape in legacy.catalogue ---------------------------------

TRAINING: Final = "training"
MODELS: Final = "models"
SYSTEM: Final = "system"

#: The guide's ``training_progress`` keys, plus the legacy-only ones under their own names.
PROGRESS_FIELDS: Final = (
    "session_id",
    "progress",
    "current_epoch",
    "loss",
    "metrics",
    "estimated_time_remaining",
    "phase_name",
    "message",
    "status",
)


def default_rules() -> tuple[TranslationRule, ...]:
    """Return one rule per shape of :data:`legacy.catalogue.CATALOGUE`.

    ``training_update`` is ``training_progress``'s default legacy shape, the
    typeless ``bare_progress`` is told apart by ``data["legacy_shape"]``;
    ``phase_update``'s three shapes are told apart by ``data["status"]``
    (``started``: ``phase_change``, ``completed``: ``phase_complete``, else the
    nested ``update``).
    """
    t = MessageType
    return (
        TranslationRule(
            "training_update",
            t.TRAINING_PROGRESS,
            TRAINING,
            discriminator=("type", "training_update"),
            fields=PROGRESS_FIELDS,
        ),
        TranslationRule(
            "bare_progress",
            t.TRAINING_PROGRESS,
            TRAINING,
            requires=("progress",),
            fields=("progress", ("session", "session_id")),
            data_constants={"legacy_shape": "bare_progress"},
            timestamp_field=None,
        ),
        TranslationRule(
            "training_started",
            t.TRAINING_STARTED,
            TRAINING,
            discriminator=("type", "training_started"),
            fields=(("task_id", "session_id"), ("config", "parameters"), "phase_name", "message"),
        ),
        TranslationRule(
            "training_complete",
            t.TRAINING_COMPLETED,
            TRAINING,
            discriminator=("type", "training_complete"),
            constants={"status": "completed"},
            fields=("session_id", "message", ("final_metrics", "metrics")),
        ),
        TranslationRule(
            "training_error",
            t.TRAINING_FAILED,
            TRAINING,
            discriminator=("type", "training_error"),
            constants={"status": "failed"},
            fields=("session_id", "phase_name", "error"),
        ),
        TranslationRule(
            "phase_change",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "phase_change"),
            data_constants={"status": "started"},
            fields=(("to_phase", "phase_name"), ("from_phase", "previous_phase")),
        ),
        TranslationRule(
            "phase_complete",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "phase_complete"),
            data_constants={"status": "completed"},
            fields=("phase_name", "models_completed", "total_models", "duration_seconds"),
        ),
        TranslationRule(
            "nested_update",
            t.PHASE_UPDATE,
            TRAINING,
            discriminator=("type", "update"),
            timestamp_field=None,
            fields=(
                ("payload.phase", "phase_name"),
                ("payload.progress", "progress"),
                ("payload.step", "message"),
            ),
        ),
        TranslationRule(
            "model_created",
            t.MODEL_CREATED,
            MODELS,
            discriminator=("type", "model_created"),
            fields=(
                "model_id",
                ("model_name", "model_info.name"),
                ("parameters", "model_info.parameter_count"),
                ("phase_name", "model_info.phase_name"),
            ),
        ),
        TranslationRule(
            "model_updated",
            t.MODEL_UPDATED,
            MODELS,
            discriminator=("event", "model_updated"),
            fields=("model_id", "changes"),
        ),
        TranslationRule(
            "status",
            t.SYSTEM_STATUS,
            SYSTEM,
            discriminator=("type", "status"),
            fields=("status", "message", "active_phases"),
        ),
    )
