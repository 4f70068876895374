"""What the differ reports: mismatch records, counters, and their JSON/Markdown forms.

No I/O and no comparison logic here (that is :mod:`shim.diff`); this module only
holds the values the differ produces and renders them for people (Markdown, for a
CI job summary or a pull request) and for machines (JSON).

Counter keys, per endpoint (see :data:`COUNTER_KEYS`):

- ``compared``: events recorded, both sides together;
- ``matched``: events that found an identical counterpart, in order (two per pair);
- ``missing``/``extra``/``field``/``order``/``overflow``: unexpected mismatches of
  that kind (one per mismatch, whatever the number of events in it);
- ``expected``: mismatches that a declared :class:`~shim.diff.ExpectedDifference`
  accepted, whatever their kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final

import orjson

__all__ = [
    "ABSENT",
    "COUNTER_KEYS",
    "UNEXPECTED_KINDS",
    "DiffReport",
    "FieldDiff",
    "Mismatch",
    "MismatchKind",
]


class MismatchKind(StrEnum):
    """What kind of difference a :class:`Mismatch` records."""

    MISSING = "missing"  #: legacy delivered it, new did not
    EXTRA = "extra"  #: new delivered it, legacy did not
    FIELD = "field"  #: both delivered "the same" event, with different fields
    ORDER = "order"  #: both delivered the identical event, in a different order
    OVERFLOW = "overflow"  #: a pending buffer overflowed; the comparison is incomplete


#: Kinds that count as unexpected when no declaration accepts them.
UNEXPECTED_KINDS: Final[tuple[str, ...]] = tuple(kind.value for kind in MismatchKind)

#: The keys of every endpoint's counters, in display order.
COUNTER_KEYS: Final[tuple[str, ...]] = ("compared", "matched", *UNEXPECTED_KINDS, "expected")


class _Absent(Enum):
    ABSENT = "<absent>"

    def __repr__(self) -> str:
        return "<absent>"


#: Stands for "this path does not exist on that side" in a :class:`FieldDiff`.
#: In JSON the corresponding ``legacy``/``new`` key is omitted instead.
ABSENT: Final = _Absent.ABSENT


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One differing path of a FIELD mismatch.

    ``path`` is dotted, list indexes included (``data.metrics.0.value``), the same
    syntax as :attr:`~shim.diff.DiffConfig.masks`. ``legacy``/``new`` hold the
    (masked) values at that path, or :data:`ABSENT` where the path does not exist.
    Lists of different lengths are reported once, at the list's own path.
    """

    path: str
    legacy: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"path", "legacy"?, "new"?}``; an absent side's key is omitted."""
        out: dict[str, Any] = {"path": self.path}
        if self.legacy is not ABSENT:
            out["legacy"] = self.legacy
        if self.new is not ABSENT:
            out["new"] = self.new
        return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One difference between what legacy and new delivered on one connection.

    ``legacy``/``new`` are the events as recorded (unmasked), ``None`` for the side
    that did not deliver. ``expected`` is True when a declared difference accepted
    it; ``reason`` is then the declaration's reason, otherwise a description.
    ``at`` is the differ's clock when the mismatch was found.
    """

    kind: MismatchKind
    connection: str
    endpoint: str
    type: str
    topic: str | None
    legacy: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    fields: tuple[FieldDiff, ...] = ()
    expected: bool = False
    reason: str = ""
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (payloads copied shallowly, field diffs as dicts)."""
        return {
            "kind": self.kind.value,
            "connection": self.connection,
            "endpoint": self.endpoint,
            "type": self.type,
            "topic": self.topic,
            "legacy": None if self.legacy is None else dict(self.legacy),
            "new": None if self.new is None else dict(self.new),
            "fields": [diff.to_dict() for diff in self.fields],
            "expected": self.expected,
            "reason": self.reason,
            "at": self.at,
        }


@dataclass
class DiffReport:
    """A snapshot of the differ: counters per endpoint and the recent unexpected mismatches.

    ``generated_at`` is read from the differ's clock (monotonic unless another clock
    was passed in).
    """

    counters: dict[str, dict[str, int]]
    mismatches: list[Mismatch]
    generated_at: float

    @property
    def unexpected_total(self) -> int:
        """Unexpected mismatches of every kind, over every endpoint."""
        return sum(
            counts.get(kind, 0) for counts in self.counters.values() for kind in UNEXPECTED_KINDS
        )

    @property
    def has_unexpected(self) -> bool:
        """True when any endpoint counted an unexpected mismatch (a property, not a method)."""
        return self.unexpected_total > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "unexpected_total": self.unexpected_total,
            "counters": self.counters,
            "mismatches": [mismatch.to_dict() for mismatch in self.mismatches],
        }

    def to_json(self) -> str:
        """Return the report as indented JSON; values JSON cannot hold become their repr."""
        return _dumps(self.to_dict(), indent=True)

    def to_markdown(self) -> str:
        """Return a summary table per endpoint, then each mismatch with both payloads."""
        lines = ["# Delivery diff", ""]
        total = self.unexpected_total
        lines.append(
            f"**{total} unexpected mismatch{'es' if total != 1 else ''}**"
            f" over {len(self.counters)} endpoint{'s' if len(self.counters) != 1 else ''}."
        )
        lines += ["", _summary_table(self.counters), ""]
        if not self.mismatches:
            lines.append("No unexpected mismatch kept.")
            return "\n".join(lines) + "\n"
        lines += [f"## Recent unexpected mismatches ({len(self.mismatches)})", ""]
        for number, mismatch in enumerate(self.mismatches, start=1):
            lines += _mismatch_section(number, mismatch)
        return "\n".join(lines) + "\n"


def _summary_table(counters: Mapping[str, Mapping[str, int]]) -> str:
    header = "| endpoint | " + " | ".join(COUNTER_KEYS) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in COUNTER_KEYS) + " |"
    rows = [header, rule]
    totals = dict.fromkeys(COUNTER_KEYS, 0)
    for endpoint in sorted(counters):
        counts = counters[endpoint]
        for key in COUNTER_KEYS:
            totals[key] += counts.get(key, 0)
        cells = " | ".join(str(counts.get(key, 0)) for key in COUNTER_KEYS)
        rows.append(f"| {_cell(endpoint)} | {cells} |")
    rows.append("| **total** | " + " | ".join(str(totals[key]) for key in COUNTER_KEYS) + " |")
    return "\n".join(rows)


def _mismatch_section(number: int, mismatch: Mismatch) -> list[str]:
    topic = f", topic {_cell(mismatch.topic)}" if mismatch.topic is not None else ""
    lines = [
        f"### {number}. {mismatch.kind.value.upper()}: {_cell(mismatch.type or '?')}"
        f" on {_cell(mismatch.endpoint)}{topic}",
        "",
        f"Connection {_cell(mismatch.connection)} at t={mismatch.at:.3f}: {mismatch.reason}",
        "",
    ]
    if mismatch.fields:
        lines += ["| path | legacy | new |", "| --- | --- | --- |"]
        for diff in mismatch.fields:
            lines.append(
                f"| {_cell(diff.path)} | {_value_cell(diff.legacy)} | {_value_cell(diff.new)} |"
            )
        lines.append("")
    for label, payload in (("legacy", mismatch.legacy), ("new", mismatch.new)):
        if payload is None:
            lines += [f"**{label}**: not delivered", ""]
        else:
            lines += [f"**{label}**:", "", *_code_block(_dumps(dict(payload), indent=True)), ""]
    return lines


_CELL_LIMIT = 120


def _cell(text: str) -> str:
    """Inline code safe inside a table cell: no pipes, no newlines, no broken backticks."""
    flat = text.replace("\n", " ").replace("|", "\\|")
    if len(flat) > _CELL_LIMIT:
        flat = flat[: _CELL_LIMIT - 1] + "…"
    fence = "`" * (_longest_run(flat, "`") + 1)
    padding = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{padding}{flat}{padding}{fence}"


def _value_cell(value: Any) -> str:
    if value is ABSENT:
        return "*absent*"
    return _cell(_dumps(value, indent=False))


def _code_block(text: str) -> list[str]:
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    return [f"{fence}json", text, fence]


def _longest_run(text: str, char: str) -> int:
    runs = re.findall(f"{re.escape(char)}+", text)
    return max((len(run) for run in runs), default=0)


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(repr(item) for item in value)
    if isinstance(value, Mapping):
        return dict(value)
    return repr(value)


def _dumps(value: Any, *, indent: bool) -> str:
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_json_default, option=option).decode()
    except (TypeError, ValueError):
        pass  # orjson refuses integers past 64 bits and circular structures
    try:
        return json.dumps(value, default=repr, indent=2 if indent else None)
    except (TypeError, ValueError):
        return repr(value)
