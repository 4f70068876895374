"""Translation between legacy payloads and standardized messages, both ways, by rules.

Each legacy payload shape (see :mod:`legacy.producers`) has one declarative
:class:`TranslationRule`: how to recognise it, which :class:`MessageType` and topic
it becomes, and which legacy field becomes which ``data`` key. A
:class:`Translator` applies them::

    translator = Translator()                          # the default rules
    translation = translator.to_standard(payload)      # legacy dict -> message + rule
    await service.broadcast(translation.message, topic=translation.topic)
    translator.to_legacy(message_or_wire_dict)         # message -> legacy dict | None

Legacy -> standard is exact
---------------------------
``to_legacy(to_standard(p).message) == p`` for every JSON-serializable dict ``p``,
whether a rule matches it or not, also through the message's wire form (and
through JSON, as far as JSON preserves ``p`` itself). Nothing is dropped:

- mapped fields move to their ``data`` key (dotted paths nest on either side);
- the rule's legacy timestamp field, a string, becomes the envelope ``timestamp``;
- a legacy field the rule does not know keeps its name at the top of ``data``,
  unless that name means something there: a mapped key, a key that selects
  between the rules of the type, or ``extra``/``omitted``. Those go, unchanged,
  under ``data["extra"]``. A non-empty dict named like a nested ``data`` path
  (``model_info``) is merged into it when none of its keys is a mapped one;
  otherwise it goes under ``extra`` too;
- ``data["omitted"]`` lists the fields ``to_legacy`` would otherwise fill in (the
  timestamp, a constant field) but which the original payload did not have;
- a rule's ``data_constants`` are added to ``data``; they tell apart the legacy
  shapes of one type (``phase_update`` with ``status`` ``"started"`` came from a
  ``phase_change``);
- an unknown shape becomes ``custom`` on ``untranslated_topic`` with the whole
  payload as ``data["legacy"]``, is counted, and comes back unchanged.

Standard -> legacy
------------------
``to_legacy`` renders any domain message in the old shape of its type's rule:
the one whose ``data_constants`` all match, the most specific first (the rule
without constants is the type's default). Unmapped ``data`` keys keep their names
at the top of the payload, so ``to_standard(to_legacy(m))`` gives ``m`` back too,
except for a key that clashes with a field the rule sets (dropped and counted as
a collision) and a top-level ``data`` key named like a legacy constant (it wins
over the constant and then returns under ``extra``). Protocol messages, types no
rule produces (``model_deleted``) and ``custom`` messages that do not wrap a
legacy payload have no legacy counterpart: ``to_legacy`` returns ``None``.

Units: legacy ``progress`` is a fraction in ``[0, 1]``, the unit of the
standardized ``progress``, so it is copied unchanged (a scaled copy could not
round-trip exactly through floats).

Exceptions::

    TranslationError   a payload or message cannot be translated (``rule``, ``reason``)

Rules that contradict themselves or each other raise ``ValueError`` when built.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from service.messages import (
    PROTOCOL_TYPES,
    MessageType,
    WebSocketMessage,
    coerce_type,
    type_name,
    utc_now_iso,
)
from service.protocol import TOPIC_PATTERN

__all__ = [
    "DEFAULT_UNTRANSLATED_TOPIC",
    "EXTRA_KEY",
    "LEGACY_KEY",
    "OMITTED_KEY",
    "TEXT_KEY",
    "VALUE_KEY",
    "FieldMap",
    "Translation",
    "TranslationError",
    "TranslationRule",
    "Translator",
]

#: ``data`` key carrying legacy fields whose names mean something else in ``data``.
EXTRA_KEY: Final = "extra"
#: ``data`` key listing the legacy fields the original payload did not have.
OMITTED_KEY: Final = "omitted"
#: ``data`` key of a ``custom`` message carrying an untranslated legacy payload.
LEGACY_KEY: Final = "legacy"
#: ``data`` key of a ``custom`` message carrying an untranslated non-dict JSON payload.
VALUE_KEY: Final = "value"
#: ``data`` key of a ``custom`` message carrying a raw (non-JSON) text frame.
TEXT_KEY: Final = "text"
#: Where untranslated payloads are published unless configured otherwise.
DEFAULT_UNTRANSLATED_TOPIC: Final = "custom"

_RESERVED = frozenset({EXTRA_KEY, OMITTED_KEY})

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
    (identity when ``None``). They must be exact inverses of each other or the
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
    - ``message_type``/``topic``: what the shape becomes: a domain event type,
      well-known (:class:`MessageType`) or the app's own (``"job_done"``).
    - ``discriminator``: ``(field, value)``, e.g. ``("type", "training_update")``;
      the rule matches a payload whose top-level ``field`` equals ``value``.
    - ``requires``: for shapes with no discriminator: top-level fields that must
      be present; such a rule only matches a payload that carries none of the
      translator's discriminator fields. Give exactly one of the two.
    - ``fields``: ``"name"`` (same on both sides), ``("legacy.path", "data.path")``
      or a :class:`FieldMap`.
    - ``constants``: top-level legacy fields with a fixed value (JSON scalars),
      rebuilt by ``to_legacy``.
    - ``data_constants``: ``data`` entries (JSON scalars) added by
      ``to_standard``; they select this rule in ``to_legacy``.
    - ``timestamp_field``: the legacy field holding the event time (``None``: none);
      like every field name here, a dotted path reaches into nested objects.
    - ``sample``: an example payload of the shape. When given, the rule must match
      it, every mapped legacy path and the timestamp must exist in it, and the
      translator checks it round-trips exactly, all when the rule is built. Its key
      order is the one ``to_legacy`` writes (without a sample: the order of the
      first payload the rule matched in this process).
    """

    name: str
    message_type: MessageType | str
    topic: str
    discriminator: tuple[str, str] | None = None
    requires: tuple[str, ...] = ()
    fields: tuple[str | tuple[str, str] | FieldMap, ...] = ()
    constants: Mapping[str, Any] = field(default_factory=dict)
    data_constants: Mapping[str, Any] = field(default_factory=dict)
    timestamp_field: str | None = "timestamp"
    sample: Mapping[str, Any] | None = None
    _fields: tuple[_Field, ...] = field(init=False, repr=False, compare=False)
    _legacy_constants: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "message_type", coerce_type(self.message_type))
        except ValueError as exc:
            raise ValueError(f"translation rule {self.name!r}: {exc}") from None
        legacy_constants = dict(self.constants)
        if self.discriminator is not None:
            legacy_constants = {self.discriminator[0]: self.discriminator[1], **legacy_constants}
        try:
            compiled = tuple(_compile(spec) for spec in self.fields)
        except ValueError as exc:
            raise ValueError(f"translation rule {self.name!r}: {exc}") from None
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
            problems.append(f"{type_name(self.message_type)!r} is not a domain event type")
        if self.timestamp_field is not None and not all(self.timestamp_field.split(".")):
            problems.append(f"invalid timestamp field {self.timestamp_field!r}")
        if (self.discriminator is None) == (not self.requires):
            problems.append("give exactly one of discriminator and requires")
        if self.discriminator is not None and self.discriminator[0] in self.constants:
            problems.append("the discriminator field is also a constant")
        stamp_head = None if self.timestamp_field is None else self.timestamp_field.split(".")[0]
        if stamp_head in self._legacy_constants:
            problems.append("the timestamp field is also a constant")
        for name, value in (*self.constants.items(), *self.data_constants.items()):
            if not _is_scalar(value):
                problems.append(f"constant {name!r} must be a JSON scalar")
        problems += _overlaps("legacy", [f.legacy for f in self._fields])
        problems += _overlaps("data", [f.standard for f in self._fields])
        fixed = {*self._legacy_constants, stamp_head}
        problems += [
            f"legacy field {'.'.join(f.legacy)!r} is a constant or the timestamp"
            for f in self._fields
            if f.legacy[0] in fixed
        ]
        taken = _RESERVED | set(self.data_constants)
        problems += [
            f"data key {'.'.join(f.standard)!r} is reserved or a data constant"
            for f in self._fields
            if f.standard[0] in taken
        ]
        problems += [
            f"data constant {k!r} is reserved" for k in _RESERVED & set(self.data_constants)
        ]
        if self.sample is not None and not problems:
            problems += self._sample_problems(self.sample)
        return problems

    def _sample_problems(self, sample: Mapping[str, Any]) -> list[str]:
        if not isinstance(sample, Mapping):
            return [f"sample must be a JSON object, not {type(sample).__name__}"]
        problems = []
        if self.discriminator is not None:
            key, value = self.discriminator
            if not _same(sample.get(key), value):
                problems.append(f"sample does not match the discriminator {key} == {value!r}")
        missing_required = [key for key in self.requires if key not in sample]
        if missing_required:
            problems.append(f"sample lacks the required fields {missing_required!r}")
        paths = [f.legacy for f in self._fields]
        if self.timestamp_field is not None:
            paths.append(_path(self.timestamp_field))
        problems += [
            f"path {'.'.join(path)!r} does not exist in the sample"
            for path in paths
            if not _has_path(sample, path)
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
        """The topic to broadcast ``message`` on (the same as ``message.topic``)."""
        return self.message.topic or ""


class _Plan(NamedTuple):
    """A rule plus what the translator derived for it from the other rules."""

    rule: TranslationRule
    escaped: frozenset[str]  # unknown legacy fields that must go under "extra"
    containers: dict[str, frozenset[str]]  # nested data key -> its mapped children


class Translator:
    """Applies translation rules and counts what it translated.

    Keyword-only configuration: ``rules`` (default :func:`shim.rules.default_rules`),
    ``untranslated_topic`` for payloads no rule matches (default ``"custom"``),
    ``clock`` giving the envelope timestamp when a payload carries none.
    Raises ``ValueError`` when two rules share a name or a discriminator, when two
    rules of one type have the same ``data_constants`` (``to_legacy`` could not
    tell them apart) or a rule maps to a key that selects between others, and for
    an invalid topic. Not thread-safe (the counters): use one per event loop.
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
        self.untranslated_topic = untranslated_topic
        if rules is None:
            from .rules import default_rules  # the catalogue's rules import this module

            rules = default_rules()
        self._rules = tuple(rules)
        self._clock = clock
        self._by_discriminator: dict[str, dict[str, _Plan]] = {}
        self._keyless: list[_Plan] = []
        self._reverse: dict[MessageType | str, tuple[_Plan, ...]] = {}
        self._index(self._rules)
        self._matched: Counter[str] = Counter({rule.name: 0 for rule in self._rules})
        #: Per rule, the key layout of its sample, else of the first payload it matched:
        #: to_legacy writes keys in that order (old clients get the app's bytes).
        self._layouts: dict[str, Mapping[str, Any]] = {
            rule.name: rule.sample for rule in self._rules if rule.sample is not None
        }
        self._untranslated = 0
        self._errors = 0
        self._collisions = 0
        for rule in self._rules:
            if rule.sample is not None:
                self._check_sample(rule, dict(rule.sample))
        self._matched = Counter({rule.name: 0 for rule in self._rules})
        self._untranslated = 0

    def _check_sample(self, rule: TranslationRule, sample: dict[str, Any]) -> None:
        translation = self.to_standard(sample)
        if translation.rule != rule.name:
            raise ValueError(
                f"translation rule {rule.name!r}: its sample matches "
                f"{translation.rule or 'no rule'!r} instead"
            )
        problem = self.round_trip_problem(sample)
        if problem is not None:
            raise ValueError(f"translation rule {rule.name!r}: sample {problem}")

    def round_trip_problem(self, payload: Any) -> str | None:
        """Why ``to_legacy(to_standard(payload))`` is not ``payload``, or ``None``.

        Names the rule and the first differing path, e.g. ``rule 'job_progress'
        does not round-trip at 'pct': 0.1 came back as 0``: what an old client at
        ``live``/``new`` would receive differently.
        """
        try:
            translation = self.to_standard(payload)
            back = self.to_legacy(translation.message)
        except TranslationError as exc:
            return str(exc)
        where = first_difference(payload, back)
        if where is None:
            return None
        path, was, came = where
        rule = "no rule" if translation.rule is None else f"rule {translation.rule!r}"
        return f"{rule} does not round-trip at {path or '<root>'!r}: {was!r} came back as {came!r}"

    def _index(self, rules: tuple[TranslationRule, ...]) -> None:
        names = Counter(rule.name for rule in rules)
        duplicates = sorted(name for name, n in names.items() if n > 1)
        if duplicates:
            raise ValueError(f"translation rule names must be unique: {duplicates!r}")
        seen: dict[tuple[str, str], str] = {}
        for rule in rules:
            if rule.discriminator is not None:
                if rule.discriminator in seen:
                    key, value = rule.discriminator
                    raise ValueError(
                        f"rules {seen[rule.discriminator]!r} and {rule.name!r} both match "
                        f"{key} == {value!r}"
                    )
                seen[rule.discriminator] = rule.name
        by_type: dict[MessageType | str, list[TranslationRule]] = {}
        for rule in rules:
            by_type.setdefault(rule.message_type, []).append(rule)
        plans: dict[str, _Plan] = {}
        for message_type, group in by_type.items():
            selectors = frozenset(k for rule in group for k in rule.data_constants)
            for rule in group:
                plans[rule.name] = _plan(rule, selectors, group)
            # Most specific first; sorted() is stable, so ties keep registration order.
            self._reverse[message_type] = tuple(
                sorted((plans[r.name] for r in group), key=lambda p: -len(p.rule.data_constants))
            )
        for rule in rules:
            if rule.discriminator is None:
                self._keyless.append(plans[rule.name])
            else:
                key, value = rule.discriminator
                self._by_discriminator.setdefault(key, {})[value] = plans[rule.name]

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
        ``collisions`` counts ``data`` keys ``to_legacy`` had to drop.
        """
        return {
            "rules": dict(self._matched),
            "untranslated": self._untranslated,
            "errors": self._errors,
            "collisions": self._collisions,
        }

    # -- legacy -> standard ----------------------------------------------------------

    def to_standard(self, payload: Any) -> Translation:
        """Translate a legacy payload; never drops it (unknown shapes become ``custom``).

        The rule is found by a dict lookup on each discriminator field's value;
        only a payload without any discriminator field is tried against the few
        rules that have none, in order. A dict no rule matches becomes ``custom``
        with ``data["legacy"]``; any other JSON value (a list, a string, a number)
        becomes ``custom`` with ``data["value"]``; both are counted as untranslated.
        Raises :class:`TranslationError` when ``payload`` is not JSON-serializable
        or the rule raises. ``payload`` is not modified.
        """
        try:
            orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            self._errors += 1
            raise TranslationError(None, f"payload is not JSON-serializable: {exc}") from exc
        if not isinstance(payload, dict):
            return self._untranslated_message({VALUE_KEY: payload}, None)
        plan = self._match(payload)
        if plan is None:
            stamp = payload.get("timestamp")
            return self._untranslated_message({LEGACY_KEY: payload}, stamp)
        rule = plan.rule
        try:
            data, stamp = _forward(plan, payload)
        except Exception as exc:
            self._errors += 1
            raise TranslationError(rule.name, f"{type(exc).__name__}: {exc}") from exc
        self._matched[rule.name] += 1
        if rule.name not in self._layouts:
            self._layouts[rule.name] = _layout(payload)
        message = WebSocketMessage(
            type=rule.message_type,
            data=data,
            timestamp=stamp if stamp is not None else self._clock(),
            topic=rule.topic,
        )
        return Translation(message, rule.name)

    def text_to_standard(self, text: str) -> Translation:
        """A raw text frame (``send_text`` of something that is not JSON) as ``custom``."""
        return self._untranslated_message({TEXT_KEY: text}, None)

    def _untranslated_message(self, data: dict[str, Any], stamp: object) -> Translation:
        self._untranslated += 1
        message = WebSocketMessage(
            type=MessageType.CUSTOM,
            data=data,
            timestamp=stamp if isinstance(stamp, str) else self._clock(),
            topic=self.untranslated_topic,
        )
        return Translation(message, None)

    def _match(self, payload: dict[str, Any]) -> _Plan | None:
        discriminated = False
        for key, by_value in self._by_discriminator.items():
            if key in payload:
                discriminated = True
                value = payload[key]
                plan = by_value.get(value) if isinstance(value, str) else None
                if plan is not None:
                    return plan
        if discriminated:
            return None  # a discriminated shape no rule knows is not a keyless one
        for plan in self._keyless:
            if all(key in payload for key in plan.rule.requires):
                return plan
        return None

    # -- standard -> legacy ----------------------------------------------------------

    def to_legacy(self, message: WebSocketMessage | Mapping[str, Any]) -> Any:
        """Return the payload a legacy client would have received, or ``None``.

        ``message`` is a :class:`WebSocketMessage` or its wire dict (``topic``,
        ``seq``, ``epoch`` and ``id`` are ignored). ``None``: protocol messages,
        types no rule produces, ``custom`` messages not wrapping a legacy payload
        (a wrapped one is returned as is). Raises :class:`TranslationError` for a
        malformed wire dict or a rule that raises. The payload may share nested
        values with ``message``.
        """
        message_type, data, stamp = self._read(message)
        if message_type in PROTOCOL_TYPES:
            return None
        if message_type is MessageType.CUSTOM:
            original = data.get(LEGACY_KEY)
            if isinstance(original, dict):
                return original
            return data.get(VALUE_KEY) if set(data) == {VALUE_KEY} else None
        rule = self._reverse_rule(message_type, data)
        if rule is None:
            return None
        try:
            payload, collisions = _backward(rule, data, stamp, self._layouts.get(rule.name))
        except Exception as exc:
            self._errors += 1
            raise TranslationError(rule.name, f"{type(exc).__name__}: {exc}") from exc
        self._collisions += collisions
        return payload

    def to_legacy_text(self, message: WebSocketMessage | Mapping[str, Any]) -> str | None:
        """The exact text frame an old client would have received, or ``None``.

        JSON as Starlette's ``send_json`` writes it, or the raw text a ``custom``
        message carries under ``data["text"]`` (a ``send_text`` of non-JSON).
        """
        wire = message.to_wire() if isinstance(message, WebSocketMessage) else message
        kind, data = wire.get("type"), wire.get("data")
        if kind == MessageType.CUSTOM and isinstance(data, dict) and set(data) == {TEXT_KEY}:
            text = data[TEXT_KEY]
            return text if isinstance(text, str) else None
        payload = self.to_legacy(message)
        if payload is None:
            return None
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    def _read(
        self, message: WebSocketMessage | Mapping[str, Any]
    ) -> tuple[MessageType | str, dict[str, Any], str]:
        if isinstance(message, WebSocketMessage):
            return message.type, message.data, message.timestamp
        if not isinstance(message, Mapping):
            self._errors += 1
            raise TranslationError(
                None, f"expected a WebSocketMessage or its wire dict, not {type(message).__name__}"
            )
        raw_type, data, stamp = (
            message.get("type"),
            message.get("data", {}),
            message.get("timestamp"),
        )
        try:
            message_type: MessageType | str | None = coerce_type(raw_type)
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
        self, message_type: MessageType | str, data: dict[str, Any]
    ) -> TranslationRule | None:
        for plan in self._reverse.get(message_type, ()):
            constants = plan.rule.data_constants
            if all(k in data and _same(data[k], v) for k, v in constants.items()):
                return plan.rule
        return None


def _plan(rule: TranslationRule, selectors: frozenset[str], group: list[TranslationRule]) -> _Plan:
    """Check ``rule`` against the other rules of its type and derive its plan."""
    others = [r for r in group if r is not rule]
    if any(dict(r.data_constants) == dict(rule.data_constants) for r in others):
        raise ValueError(
            f"rules of type {type_name(rule.message_type)!r} need distinct data_constants "
            f"({rule.name!r} has {dict(rule.data_constants)!r} like another)"
        )
    mapped = {f.standard[0] for f in rule._fields}
    clash = mapped & {k for r in others for k in r.data_constants}
    if clash:
        raise ValueError(f"rule {rule.name!r} maps to {sorted(clash)!r}, which select other rules")
    containers: dict[str, set[str]] = {}
    for spec in rule._fields:
        if len(spec.standard) > 1:
            containers.setdefault(spec.standard[0], set()).add(spec.standard[1])
    leaves = {f.standard[0] for f in rule._fields if len(f.standard) == 1}
    return _Plan(
        rule,
        frozenset(_RESERVED | selectors | leaves),
        {name: frozenset(kids) for name, kids in containers.items()},
    )


# -- the two directions, as plain functions over one rule ---------------------------------


def _forward(plan: _Plan, payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Return ``(data, timestamp or None)`` for a payload ``plan.rule`` matched."""
    rule = plan.rule
    remaining = dict(payload)
    omitted: list[str] = []
    for key, value in rule._legacy_constants.items():
        if key not in remaining:
            omitted.append(key)
        elif _same(remaining[key], value):
            del remaining[key]
    stamp = None
    if rule.timestamp_field is not None:
        stamp_path = _path(rule.timestamp_field)
        if not _has_path(remaining, stamp_path):
            omitted.append(rule.timestamp_field)
        elif isinstance(_get_path(remaining, stamp_path), str):
            stamp = _pop_path(remaining, stamp_path)[1]
    data: dict[str, Any] = {}
    for spec in rule._fields:
        found, value = _pop_path(remaining, spec.legacy)
        if found:
            _set_path(data, spec.standard, value if spec.forward is None else spec.forward(value))
    data.update(rule.data_constants)
    extra: dict[Any, Any] = {}
    for key, value in remaining.items():
        kids = plan.containers.get(key)
        if key in plan.escaped:
            extra[key] = value
        elif kids is None:
            data[key] = value
        elif isinstance(value, dict) and value and kids.isdisjoint(value):
            data[key] = {**data.get(key, {}), **value}
        else:
            extra[key] = value
    if extra:
        data[EXTRA_KEY] = extra
    if omitted:
        data[OMITTED_KEY] = omitted
    return data, stamp


def _backward(
    rule: TranslationRule,
    data: dict[str, Any],
    stamp: str,
    layout: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], int]:
    """Return ``(legacy payload, collisions)`` for a message ``rule`` was chosen for,
    its keys ordered like ``layout`` (the legacy payload's, when known)."""
    leftover = dict(data)
    for key in rule.data_constants:
        del leftover[key]  # present: they selected the rule
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
    mapped = []
    for spec in rule._fields:
        found, value = _pop_path(leftover, spec.standard)
        if found:
            mapped.append((spec.legacy, value if spec.backward is None else spec.backward(value)))
    payload = {k: v for k, v in rule._legacy_constants.items() if k not in omitted}
    # Unmapped keys win over a constant or the envelope timestamp: that is how a
    # differing constant or a non-string timestamp comes back.
    payload.update(leftover)
    payload.update(extra)
    if rule.timestamp_field is not None and rule.timestamp_field not in omitted:
        stamp_path = _path(rule.timestamp_field)
        if not _has_path(payload, stamp_path):  # merged beside its unmapped siblings
            _set_path(payload, stamp_path, stamp)
    collisions = sum(_set_path(payload, path, value) for path, value in mapped)
    if rule.discriminator is not None:
        key, value = rule.discriminator
        if not _same(payload.get(key), value):
            collisions += 1
            payload[key] = value
    if layout is not None:
        payload = _ordered_like(payload, layout)
    return payload, collisions


def _layout(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``payload``, nested objects' too, in order (values dropped)."""
    return {
        key: _layout(value) if isinstance(value, Mapping) else None
        for key, value in payload.items()
    }


def _ordered_like(value: dict[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` with its keys in the order ``template`` has them, nested too.

    Old clients then get the frame byte for byte as the app wrote it (JSON text
    keeps insertion order); keys the sample lacks follow in their own order.
    """
    ordered: dict[str, Any] = {}
    for key in (*(k for k in template if k in value), *(k for k in value if k not in template)):
        item, shape = value[key], template.get(key)
        if isinstance(item, dict) and isinstance(shape, Mapping):
            item = _ordered_like(item, shape)
        ordered[key] = item
    return ordered


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
            n = min(len(a), len(b))
            if a[:n] == b[:n]:
                problems.append(f"{side} paths {'.'.join(a)!r} and {'.'.join(b)!r} overlap")
    return problems


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _same(a: object, b: object) -> bool:
    """Equal and of the same type (``1``, ``1.0`` and ``True`` are different payloads)."""
    return type(a) is type(b) and a == b


def _get_path(root: Mapping[Any, Any], path: _Path) -> Any:
    node: Any = root
    for key in path:
        node = node[key]
    return node


def _has_path(root: Mapping[Any, Any], path: _Path) -> bool:
    node: Any = root
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def first_difference(a: object, b: object, path: str = "") -> tuple[str, object, object] | None:
    """The first dotted path where two JSON values differ (types count), or ``None``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in (*a, *(k for k in b if k not in a)):
            if key not in a or key not in b:
                return f"{path}{key}", a.get(key), b.get(key)
            found = first_difference(a[key], b[key], f"{path}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}{index}.")
            if found is not None:
                return found
        return None
    return None if _same(a, b) else (path.rstrip("."), a, b)


def _pop_path(root: dict[Any, Any], path: _Path) -> tuple[bool, Any]:
    """Remove ``path`` from ``root`` and return ``(found, value)``.

    Nested dicts along the path are copied before they change (the caller's
    objects are never mutated); a dict left empty by the removal goes too, while
    one that was empty to begin with stays.
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
    """Set ``path`` in ``root`` (copying nested dicts); True if it overwrote something."""
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
