"""Replay recorded scenarios through the legacy manager and the new service; diff them.

    ws-migration compare scenarios                      # every scenarios/*.json
    ws-migration compare scenarios/catalogue.json --stage live
    ws-migration compare scenarios --json out.json --junit out.xml --markdown out.md
    ws-migration compare --rules myapp.migration:rules scenarios   # the app's own rules
    ws-migration record --url ws://127.0.0.1:8000/ws --seconds 10 \\
        --out scenarios/recorded.json                   # capture a local backend

(``python scripts/compare.py ...`` and ``python scripts/compare.py record ...`` run
the same code.)

Each scenario (format: ``scenarios/README.md``, ``shim/scenario.py``) is replayed in
process, by default in the ``shadow`` and the ``live`` stage, and the differ
compares what legacy and new delivered to every client. Progress goes to stderr,
one line per scenario; stdout gets a summary table, then every unexpected
mismatch with both payloads. Every legacy payload must also survive the
translation round trip, ``to_legacy(to_standard(p).message) == p``; one that
does not is printed with its rule and the first differing path. ``--rules``
takes the app's rules from ``package.module:callable`` (see :mod:`shim.plugins`)
instead of the default ones. ``record`` connects to a backend on this machine as
an old client and writes what it receives as a scenario to replay.

Exit status: 0 no unexpected mismatch, duplicate delivery or round-trip failure
(``record``: written), 1 at least one, 2 usage, file or ``--rules`` errors
(``record``: refused URL, no connection).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from .comparison import Comparison, ScenarioRuns, compare
from .plugins import RulesSpecError, load_rules
from .record import RecordingError, record
from .replay import COMPARED_STAGES, break_rule
from .scenario import (
    ScenarioError,
    dump_scenario,
    find_scenario_files,
    load_scenario,
    recorded_scenario,
)
from .stages import Stage

__all__ = ["compare_main", "main", "record_main"]

_STAGES = {"shadow": (Stage.SHADOW,), "live": (Stage.LIVE,), "both": COMPARED_STAGES}


def main(argv: Sequence[str] | None = None) -> int:
    """``compare.py [record] ...``: ``record`` first records, anything else compares."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["record"]:
        return record_main(args[1:], prog="compare record")
    return compare_main(args, prog="compare")


def compare_main(argv: Sequence[str] | None = None, *, prog: str = "compare") -> int:
    """Replay and diff the scenarios named in ``argv``; return the exit status."""
    _configure_logging()
    return _compare(_compare_parser(prog).parse_args(argv))


def record_main(argv: Sequence[str] | None = None, *, prog: str = "record") -> int:
    """Record a local backend as a scenario; return the exit status."""
    _configure_logging()
    return _record(_record_parser(prog).parse_args(argv))


def _configure_logging() -> None:
    # Only problems go to stderr; the report goes to stdout.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _compare_parser(prog: str) -> argparse.ArgumentParser:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Record a scenario: ws-migration record --help",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="scenario files or directories")
    parser.add_argument(
        "--stage", choices=sorted(_STAGES), default="both", help="stages to replay (both)"
    )
    parser.add_argument("--json", type=Path, help="write every report as JSON here")
    parser.add_argument("--junit", type=Path, help="write JUnit XML here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown report here")
    parser.add_argument("--show", type=int, default=50, help="mismatches printed per run")
    parser.add_argument("--quiet", action="store_true", help="no progress and no table")
    parser.add_argument(
        "--rules",
        metavar="MODULE:CALLABLE",
        help="the app's translation rules: a callable returning TranslationRules or a "
        "Translator (default: shim.rules.default_rules)",
    )
    # For demos and tests: make the comparison fail on purpose (see shim.replay.break_rule).
    parser.add_argument("--break-rule", metavar="RULE", help=argparse.SUPPRESS)
    return parser


def _compare(args: argparse.Namespace) -> int:
    try:
        files = find_scenario_files(args.paths)
        scenarios = [(str(path), load_scenario(path)) for path in files]
        rules = None if args.rules is None else load_rules(args.rules)
        if args.break_rule is not None:
            rules = break_rule(args.break_rule, rules)
    except (ScenarioError, RulesSpecError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    def progress(done: int, total: int, runs: ScenarioRuns) -> None:
        if args.quiet:
            return
        verdicts = ", ".join(
            f"{run.stage.value} {'FAIL' if run.failed else 'ok'}" for run in runs.runs
        )
        seconds = sum(run.seconds for run in runs.runs)
        print(
            f"[{done}/{total}] {runs.scenario.name} ({runs.source}): {verdicts}  {seconds:.2f} s",
            file=sys.stderr,
            flush=True,
        )

    comparison = asyncio.run(
        compare(scenarios, stages=_STAGES[args.stage], rules=rules, progress=progress)
    )
    try:
        _write(args.json, comparison.to_json())
        _write(args.junit, comparison.to_junit())
        _write(args.markdown, comparison.to_markdown())
    except OSError as exc:
        print(f"compare: cannot write a report: {exc}", file=sys.stderr)
        return 2
    _print(comparison, args, time.perf_counter() - started)
    return 0 if comparison.ok else 1


def _print(comparison: Comparison, args: argparse.Namespace, seconds: float) -> None:
    if not args.quiet:
        print(comparison.summary_table())
        print()
    failures = comparison.failures_text(limit=args.show)
    if failures:
        print(failures)
        print()
    print(f"{comparison.verdict()} ({seconds:.2f} s)")


def _write(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _record_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Record what an old client receives from a local backend as a scenario.",
    )
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ENDPOINT")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to record")
    parser.add_argument("--out", type=Path, required=True, help="scenario file to write")
    parser.add_argument("--name", help="scenario name (default: from --out)")
    parser.set_defaults(prog=prog)
    return parser


def _record(args: argparse.Namespace) -> int:
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]", "-", args.out.stem).lstrip("-._") or "recorded"
    try:
        recording = asyncio.run(record(args.url, seconds=args.seconds))
        scenario = recorded_scenario(
            name=name,
            endpoint=recording.endpoint,
            received=recording.received,
            description=recording.describe(),
        )
        _write(args.out, dump_scenario(scenario))
    except (RecordingError, ScenarioError, ValueError, OSError) as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {recording.describe()}")
    return 0
