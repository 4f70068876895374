"""The translation round trip: ``to_legacy(to_standard(p).message) == p`` for each payload.

Rules whose ``FieldMap`` converters are not exact inverses (a ``round`` one way,
identity back) lose information silently: the new side then serves old clients a
payload that differs from what the legacy side sends. The replay's differ only
sees that when a scenario's clients happen to receive the payload; this check
runs on every legacy payload of every scenario, with no sockets, and names the
rule and the first path that differs. Data in, data out: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .report import ABSENT
from .scenario import Scenario
from .translate import TranslationError, Translator, first_difference

__all__ = ["RoundTripFailure", "check_round_trip"]


@dataclass(frozen=True, slots=True)
class RoundTripFailure:
    """One legacy payload that does not come back unchanged.

    ``step`` indexes the scenario's ``timeline``; ``rule`` is the rule that
    translated it (``None``: no rule, or the input itself was unusable);
    ``path`` is the first differing dotted path (``metrics.pct``, ``items.2``;
    ``""`` for the whole payload; see :func:`shim.translate.first_difference`)
    with the ``original`` and ``returned`` values there (``None`` where a key is
    missing on one side). ``error`` is set instead, with ``returned``
    :data:`~shim.report.ABSENT`, when translating raised.
    """

    source: str
    scenario: str
    step: int
    rule: str | None
    path: str
    original: Any
    returned: Any
    error: str | None = None

    def describe(self) -> str:
        where = f"{self.source}: {self.scenario} timeline[{self.step}]: rule {self.rule or '?'}"
        if self.error is not None:
            return f"{where}: {self.error}"
        return (
            f"{where}: {self.path or '(payload)'}: "
            f"legacy {_show(self.original)} | round trip {_show(self.returned)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "scenario": self.scenario,
            "step": self.step,
            "rule": self.rule,
            "path": self.path,
            "original": None if self.original is ABSENT else self.original,
            "returned": None if self.returned is ABSENT else self.returned,
            "error": self.error,
        }


def check_round_trip(
    scenarios: Iterable[tuple[str, Scenario]], translator: Translator
) -> list[RoundTripFailure]:
    """Every legacy payload of every ``(source, scenario)`` that does not round-trip.

    ``translator``'s counters move; pass a fresh one to keep a replay's stats clean.
    """
    failures: list[RoundTripFailure] = []
    for source, scenario in scenarios:
        for number, step in enumerate(scenario.timeline):
            payload = step.legacy
            if payload is None:  # not a legacy producer call
                continue
            failure = _check(translator, payload)
            if failure is not None:
                rule, path, original, returned, error = failure
                failures.append(
                    RoundTripFailure(
                        source, scenario.name, number, rule, path, original, returned, error
                    )
                )
    return failures


def _check(
    translator: Translator, payload: Any
) -> tuple[str | None, str, Any, Any, str | None] | None:
    rule: str | None = None
    try:
        translation = translator.to_standard(payload)
        rule = translation.rule
        returned = translator.to_legacy(translation.message)
    except TranslationError as exc:
        return exc.rule or rule, "", payload, ABSENT, str(exc)
    found = first_difference(payload, returned)  # stricter than ==: True is not 1
    if found is None:
        return None
    path, original, back = found
    return rule, path, original, back, None


def _show(value: Any) -> str:
    return "(absent)" if value is ABSENT else repr(value)
