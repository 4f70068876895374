"""Operator command for the migration flags (``ws-migration flags``, ``scripts/flags.py``).

    ws-migration flags status                         # effective stage per endpoint
    ws-migration flags set /ws/training shadow        # whole endpoint to shadow
    ws-migration flags set /ws/training live --percent 25 --sample-rate 0.25
    ws-migration flags set /ws/training legacy        # rollback: one command
    ws-migration flags kill on                        # everything legacy, now
    ws-migration flags export > flags/unleash-import.json
    ws-migration flags bench                          # decide() cost, microseconds

``status`` reads the toggles file (``--file``, else ``$WS_MIGRATION_TOGGLES``,
else ``./ws-migration-toggles.json``, created from the packaged document on
first use: the same file the app reads, see flags.config.default_toggles_path),
or the Unleash server when ``UNLEASH_URL`` is set. ``set`` and ``kill`` rewrite the
file atomically; running backends pick the change up within about a second.
Exit status: 0 done, 1 refused (the message says why), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from shim.stages import Stage

from .config import PACKAGED_TOGGLES_FILE, FlagSettings
from .edit import (
    endpoint_rules,
    kill_switch_on,
    set_endpoint_stage,
    set_kill_switch,
    to_import_format,
)
from .errors import FlagsError
from .files import create_if_missing, read_document, write_document
from .provider import UnleashStageDecider
from .toggles import DEFAULT_ENDPOINTS, ENDPOINT_FIELD

__all__ = ["build_parser", "main"]

STAGES = [stage.value for stage in Stage]


def main(argv: Sequence[str] | None = None, *, prog: str = "flags") -> int:
    """Run the command on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser(prog).parse_args(argv)
    # Only problems go to stderr; the report goes to stdout.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        settings = FlagSettings.from_env()
        if args.file is not None:
            # An explicit file is never created: a typo must not become a new file.
            settings = dataclasses.replace(settings, toggles_file=args.file, create_missing=False)
        elif settings.create_missing and create_if_missing(
            settings.toggles_file, PACKAGED_TOGGLES_FILE
        ):
            print(f"flags: created {settings.toggles_file}", file=sys.stderr)
        return int(args.run(args, settings))
    except FlagsError as exc:
        print(f"flags: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"flags: {exc}", file=sys.stderr)
        return 1


def build_parser(prog: str = "flags") -> argparse.ArgumentParser:
    """The command's argument parser; ``prog`` names it in usage and ``--help``."""
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Read and change the migration stage of each WebSocket endpoint.\n\n"
        + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--file",
        type=Path,
        help="toggles file (default: $WS_MIGRATION_TOGGLES, else ./ws-migration-toggles.json)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", help="effective stage per endpoint", description="effective stage per endpoint"
    )
    status.add_argument("--keys", type=int, default=10_000, help="sampled connections")
    status.add_argument("--endpoint", action="append", help="endpoint (repeatable)")
    status.set_defaults(run=_status)

    flip = commands.add_parser(
        "set", help="route an endpoint to a stage", description="route an endpoint to a stage"
    )
    flip.add_argument("endpoint")
    flip.add_argument("stage", choices=STAGES)
    flip.add_argument("--percent", type=int, default=100, help="share that gets STAGE")
    flip.add_argument("--rest", choices=STAGES, help="stage of the others (below 100%%)")
    flip.add_argument("--sample-rate", type=float, help="differ sampling, 0-1")
    flip.set_defaults(run=_set)

    kill = commands.add_parser(
        "kill",
        help="kill switch: on = every endpoint legacy",
        description="kill switch: on = every endpoint legacy",
    )
    kill.add_argument("state", choices=["on", "off"])
    kill.set_defaults(run=_kill)

    bench = commands.add_parser(
        "bench",
        help="time decide() over the toggles in force",
        description="time decide() over the toggles in force",
    )
    bench.add_argument("--calls", type=int, default=20_000)
    bench.set_defaults(run=_bench)

    export = commands.add_parser(
        "export",
        help="print the file in Unleash import format",
        description="print the file in Unleash import format",
    )
    export.add_argument("--environment", default="development")
    export.add_argument("--project", default="default")
    export.set_defaults(run=_export)
    return parser


def _status(args: argparse.Namespace, settings: FlagSettings) -> int:
    endpoints = args.endpoint or _endpoints(settings)
    if settings.mode == "server":
        settings = dataclasses.replace(settings, report_to_server=False)
        print(f"source      : Unleash {settings.unleash_url}")
    else:
        doc = read_document(settings.toggles_file, stage_toggle=settings.stage_toggle)
        print(f"source      : {settings.toggles_file}")
        print(f"kill switch : {'ON' if kill_switch_on(doc) else 'off'}")
    if settings.force_stage is not None:
        print(f"override    : WS_MIGRATION_FORCE_STAGE={settings.force_stage} beats every flag")

    async def sample() -> tuple[bool | None, dict[str, str]]:
        decider = UnleashStageDecider(settings=dataclasses.replace(settings, watch_interval=None))
        await decider.start()
        try:
            splits = decider.effective_stages(endpoints, sample_keys=args.keys)
        finally:
            await decider.stop()
        return decider.reachable, {e: split.describe() for e, split in splits.items()}

    reachable, described = asyncio.run(sample())
    if settings.mode == "server":
        print(f"server      : {'reachable' if reachable else 'UNREACHABLE (bootstrap shown)'}")
    width = max(len(e) for e in endpoints)
    for endpoint in endpoints:
        print(f"{endpoint:<{width}}  {described[endpoint]}")
        if settings.mode == "embedded":
            rules = endpoint_rules(doc, endpoint, toggle=settings.stage_toggle)
            shown = " -> ".join(
                f"{r.stage} {r.percent}%"
                + (f" (sample {r.sample_rate:g})" if r.sample_rate != 1 else "")
                for r in rules
            )
            print(f"{'':<{width}}    rules: {shown or 'none (default legacy)'}")
    return 0


def _set(args: argparse.Namespace, settings: FlagSettings) -> int:
    doc = read_document(settings.toggles_file, stage_toggle=settings.stage_toggle)
    try:
        doc = set_endpoint_stage(
            doc,
            args.endpoint,
            Stage(args.stage),
            percent=args.percent,
            rest=Stage(args.rest) if args.rest else None,
            sample_rate=args.sample_rate,
            toggle=settings.stage_toggle,
        )
    except ValueError as exc:
        print(f"flags: {exc}", file=sys.stderr)
        return 1
    write_document(settings.toggles_file, doc, stage_toggle=settings.stage_toggle)
    rules = endpoint_rules(doc, args.endpoint, toggle=settings.stage_toggle)
    print(f"{args.endpoint}: " + " -> ".join(f"{r.stage} {r.percent}%" for r in rules))
    _warn_if_server(settings)
    return 0


def _kill(args: argparse.Namespace, settings: FlagSettings) -> int:
    doc = read_document(settings.toggles_file, stage_toggle=settings.stage_toggle)
    doc = set_kill_switch(doc, args.state == "on", toggle=settings.kill_switch_toggle)
    write_document(settings.toggles_file, doc, stage_toggle=settings.stage_toggle)
    print(f"kill switch {args.state}")
    _warn_if_server(settings)
    return 0


def _bench(args: argparse.Namespace, settings: FlagSettings) -> int:
    endpoints = _endpoints(settings)

    async def measure() -> float:
        decider = UnleashStageDecider(settings=dataclasses.replace(settings, watch_interval=None))
        await decider.start()
        try:
            contexts = [
                (e, f"conn-{i}", {"endpoint": e, "connection_id": f"conn-{i}"})
                for i in range(1000)
                for e in endpoints
            ]
            for endpoint, key, context in contexts:  # warm up
                decider.decide(endpoint, key, context)
            calls: int = args.calls
            started = time.perf_counter()
            for n in range(calls):
                endpoint, key, context = contexts[n % len(contexts)]
                decider.decide(endpoint, key, context)
            return (time.perf_counter() - started) / calls
        finally:
            await decider.stop()

    seconds = asyncio.run(measure())
    print(f"decide(): {seconds * 1e6:.1f} us per call over {args.calls} calls")
    return 0


def _export(args: argparse.Namespace, settings: FlagSettings) -> int:
    doc = read_document(settings.toggles_file, stage_toggle=settings.stage_toggle)
    exported = to_import_format(doc, project=args.project, environment=args.environment)
    print(json.dumps(exported, indent=2))
    return 0


def _endpoints(settings: FlagSettings) -> list[str]:
    found = list(DEFAULT_ENDPOINTS)
    try:
        doc = read_document(settings.toggles_file, stage_toggle=settings.stage_toggle)
    except FlagsError:
        return found
    for feature in doc["features"]:
        for strategy in feature.get("strategies", []):
            for constraint in strategy.get("constraints", []):
                if constraint.get("contextName") == ENDPOINT_FIELD:
                    found += [v for v in constraint.get("values", []) if v not in found]
    return found


def _warn_if_server(settings: FlagSettings) -> None:
    if settings.mode == "server":
        print(
            f"flags: note: UNLEASH_URL is set, so {settings.unleash_url} decides; this "
            "changed only the bootstrap file. Flip the toggle in Unleash.",
            file=sys.stderr,
        )
