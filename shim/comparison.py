"""Many scenarios in several stages, and the outcome as text, JSON, JUnit and Markdown.

:func:`compare` replays every scenario in every compared stage (see
:mod:`shim.replay`) and checks that every legacy payload survives the
translation round trip (:mod:`shim.roundtrip`); :class:`Comparison` renders the
result for people (a summary table, then each unexpected mismatch with both
payloads) and for CI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from .replay import COMPARED_STAGES, RunResult, _dumps, replay
from .roundtrip import RoundTripFailure, check_round_trip
from .scenario import Scenario
from .stages import Stage
from .translate import TranslationRule, Translator

__all__ = ["Comparison", "ScenarioRuns", "compare"]


# -- many scenarios, several stages ------------------------------------------------------


@dataclass
class ScenarioRuns:
    """One scenario (and the file it came from) with one result per stage."""

    scenario: Scenario
    source: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.runs)


Progress = Callable[[int, int, ScenarioRuns], None]


async def compare(
    scenarios: Sequence[tuple[str, Scenario]],
    *,
    stages: Sequence[Stage] = COMPARED_STAGES,
    rules: Sequence[TranslationRule] | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Replay every ``(source, scenario)`` in every stage, in order, then check round trips.

    ``rules`` replaces the default translation rules in every replay and in the
    round-trip check. ``progress(done, total, runs)`` is called after each scenario.
    """
    results: list[ScenarioRuns] = []
    for number, (source, scenario) in enumerate(scenarios, start=1):
        runs = ScenarioRuns(scenario, source)
        for stage in stages:
            runs.runs.append(await replay(scenario, stage, rules=rules))
        results.append(runs)
        if progress is not None:
            progress(number, len(scenarios), runs)
    return Comparison(results, check_round_trip(scenarios, Translator(rules=rules)))


@dataclass
class Comparison:
    """The outcome of :func:`compare`, with its text, JSON, JUnit and Markdown forms.

    ``round_trip`` lists the legacy payloads that do not come back unchanged
    from ``to_legacy(to_standard(p).message)``; any of them fails the comparison.
    """

    results: list[ScenarioRuns]
    round_trip: list[RoundTripFailure] = field(default_factory=list)

    @property
    def runs(self) -> list[RunResult]:
        return [run for result in self.results for run in result.runs]

    @property
    def unexpected_total(self) -> int:
        return sum(run.unexpected for run in self.runs)

    @property
    def duplicates_total(self) -> int:
        return sum(len(run.duplicates) for run in self.runs)

    @property
    def ok(self) -> bool:
        """True when no run has an unexpected mismatch or a duplicate delivery, and
        every payload survives the round trip."""
        return not self.round_trip and not any(run.failed for run in self.runs)

    def verdict(self) -> str:
        runs = len(self.runs)
        if self.ok:
            return f"OK: {runs} run(s), no unexpected mismatch, no duplicate delivery"
        failed = sum(1 for run in self.runs if run.failed)
        verdict = (
            f"FAILED: {failed} of {runs} run(s): {self.unexpected_total} unexpected"
            f" mismatch(es), {self.duplicates_total} duplicate delivery(ies)"
        )
        if self.round_trip:
            verdict += f"; {len(self.round_trip)} payload(s) fail the translation round trip"
        return verdict

    def summary_table(self) -> str:
        """A fixed-width table: one row per scenario and stage."""
        rows = [_SUMMARY_HEADER, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_SUMMARY_HEADER))]
        lines = []
        for row in rows:
            cells = [
                cell.ljust(width) if i in (0, 1, len(row) - 1) else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            _summary_row(run, len(result.scenario.clients))
            for result in self.results
            for run in result.runs
        ]

    def failures_text(self, *, limit: int | None = 50) -> str:
        """Each failed run's unexpected mismatches (both payloads) and duplicates."""
        sections = []
        for run in self.runs:
            if run.failed:
                header = (
                    f"== {run.scenario} [{run.stage.value}]: {run.unexpected} unexpected"
                    f" mismatch(es), {len(run.duplicates)} duplicate(s)"
                )
                sections.append(header + "\n" + run.failure_text(limit=limit))
        if self.round_trip:
            sections.append(self.round_trip_text(limit=limit))
        return "\n\n".join(sections)

    def round_trip_text(self, *, limit: int | None = 50) -> str:
        """The payloads that fail the round trip, one line each: rule, path, both values."""
        shown = self.round_trip if limit is None else self.round_trip[:limit]
        lines = [f"== translation round trip: {len(self.round_trip)} payload(s) changed"]
        lines += [f"  {failure.describe()}" for failure in shown]
        if len(shown) < len(self.round_trip):
            lines.append(f"  ... and {len(self.round_trip) - len(shown)} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "unexpected_total": self.unexpected_total,
            "duplicates_total": self.duplicates_total,
            "round_trip": [failure.to_dict() for failure in self.round_trip],
            "scenarios": [
                {
                    "name": result.scenario.name,
                    "source": result.source,
                    "description": result.scenario.description,
                    "clients": len(result.scenario.clients),
                    "runs": [run.to_dict() for run in result.runs],
                }
                for result in self.results
            ],
        }

    def to_json(self) -> str:
        return _dumps(self.to_dict(), indent=True) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one testcase per scenario and stage, a failure element per failed run."""
        suite = ElementTree.Element(
            "testsuite",
            name="delivery-comparison",
            tests=str(len(self.runs)),
            failures=str(sum(1 for run in self.runs if run.failed)),
            errors="0",
            skipped="0",
            time=f"{sum(run.seconds for run in self.runs):.3f}",
        )
        for result in self.results:
            for run in result.runs:
                case = ElementTree.SubElement(
                    suite,
                    "testcase",
                    classname=f"compare.{result.scenario.name}",
                    name=run.stage.value,
                    file=result.source,
                    time=f"{run.seconds:.3f}",
                )
                if run.failed:
                    failure = ElementTree.SubElement(
                        case,
                        "failure",
                        message=(
                            f"{run.unexpected} unexpected mismatch(es),"
                            f" {len(run.duplicates)} duplicate delivery(ies)"
                        ),
                        type="DeliveryMismatch",
                    )
                    failure.text = run.failure_text()
        root = ElementTree.Element("testsuites")
        root.append(suite)
        ElementTree.indent(root)
        return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

    def to_markdown(self) -> str:
        """A summary table, then each failed run's report (both payloads per mismatch)."""
        header = "| " + " | ".join(_SUMMARY_HEADER) + " |"
        rule = "| --- | --- | " + " | ".join("---:" for _ in _SUMMARY_HEADER[2:-1]) + " | --- |"
        rows = ["| " + " | ".join(row) + " |" for row in self._rows()]
        lines = ["# Delivery comparison", "", f"**{self.verdict()}**", "", header, rule, *rows]
        for run in self.runs:
            if not run.failed:
                continue
            lines += ["", f"## {run.scenario} · {run.stage.value}", ""]
            for line in run.report.to_markdown().splitlines():
                lines.append("##" + line if line.startswith("#") else line)
            if run.duplicates:
                lines += ["", "### Duplicate deliveries", ""]
                lines += [f"- {duplicate.describe()}" for duplicate in run.duplicates]
        if self.round_trip:
            lines += ["", "## Translation round trip", ""]
            lines += [f"- `{failure.describe()}`" for failure in self.round_trip]
        return "\n".join(lines) + "\n"


_SUMMARY_HEADER = (
    "scenario",
    "stage",
    "clients",
    "events",
    "compared",
    "matched",
    "unexpected",
    "expected",
    "duplicates",
    "untranslated",
    "result",
)


def _summary_row(run: RunResult, clients: int) -> tuple[str, ...]:
    return (
        run.scenario,
        run.stage.value,
        str(clients),
        str(run.events),
        str(run.compared),
        str(run.matched),
        str(run.unexpected),
        str(run.expected),
        str(len(run.duplicates)),
        str(run.untranslated),
        "FAIL" if run.failed else "ok",
    )
