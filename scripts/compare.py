"""Replay recorded scenarios through the legacy manager and the new service; diff them.

    python scripts/compare.py scenarios                      # every scenarios/*.json
    python scripts/compare.py scenarios/catalogue.json --stage live
    python scripts/compare.py scenarios --json out.json --junit out.xml --markdown out.md
    python scripts/compare.py record --url ws://127.0.0.1:8000/ws --seconds 10 \\
        --out scenarios/recorded.json                        # capture a local backend

Each scenario (format: ``scenarios/README.md``, ``shim/scenario.py``) is replayed in
process, by default in the ``shadow`` and the ``live`` stage, and the differ
compares what legacy and new delivered to every client. Progress goes to stderr,
one line per scenario; stdout gets a summary table, then every unexpected
mismatch with both payloads. ``record`` connects to a backend on this machine as
an old client and writes what it receives as a scenario to replay.

Exit status: 0 no unexpected mismatch or duplicate delivery (``record``: written),
1 at least one, 2 usage or file errors (``record``: refused URL, no connection).
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

# Run as a file, this script's folder is first on sys.path; the repository root
# must come first so that the packages import (as in scripts/flags.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from shim.comparison import Comparison, ScenarioRuns, compare
from shim.record import RecordingError, record
from shim.replay import COMPARED_STAGES, break_rule
from shim.scenario import (
    ScenarioError,
    dump_scenario,
    find_scenario_files,
    load_scenario,
    recorded_scenario,
)
from shim.stages import Stage

_STAGES = {"shadow": (Stage.SHADOW,), "live": (Stage.LIVE,), "both": COMPARED_STAGES}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Only problems go to stderr; the report goes to stdout.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if args[:1] == ["record"]:
        return _record(_record_parser().parse_args(args[1:]))
    return _compare(_compare_parser().parse_args(args))


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare",
        description=__doc__.split("\n\n")[0],
        epilog="Record a scenario: compare.py record --help",
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
    # For demos and tests: make the comparison fail on purpose (see shim.replay.break_rule).
    parser.add_argument("--break-rule", metavar="RULE", help=argparse.SUPPRESS)
    return parser


def _compare(args: argparse.Namespace) -> int:
    try:
        files = find_scenario_files(args.paths)
        scenarios = [(str(path), load_scenario(path)) for path in files]
        rules = None if args.break_rule is None else break_rule(args.break_rule)
    except (ScenarioError, ValueError) as exc:
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


def _record_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare record",
        description="Record what an old client receives from a local backend as a scenario.",
    )
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ENDPOINT")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to record")
    parser.add_argument("--out", type=Path, required=True, help="scenario file to write")
    parser.add_argument("--name", help="scenario name (default: from --out)")
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
        print(f"compare record: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {recording.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
