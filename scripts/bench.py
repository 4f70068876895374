"""Broadcast benchmark: legacy manager vs WebSocketService vs shim stages vs raw websockets.

    python scripts/bench.py                                  # every variant, N=1000 5000
    python scripts/bench.py --variants legacy service raw --n 1000 --repeat 3
    python scripts/bench.py --n 1000 5000 --deflate off on --json bench.json --png bench.png
    python scripts/bench.py --smoke --json /tmp/smoke.json   # CI: N=50, 1 repetition

Each variant runs as its own server process on 127.0.0.1 (``python -m bench.serve``),
driven by a separate client process (``python -m bench.client``, picows). Progress
goes to stderr, one line per session; stdout gets the results table (medians
[min-max], ratios vs ``legacy`` at the same N and compression) and the targets.
BENCHMARKS.md explains the method and keeps the latest results.

Exit status: 0 every session measured every delivery; 1 a session had errors or
undelivered messages without a stall; 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a file, this script's folder is first on sys.path, and scripts/bench.py
# would shadow the bench package: the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.report import (
    aggregate,
    evaluate_targets,
    machine_info,
    render_table,
    render_targets,
    to_json,
    write_png,
)
from bench.runner import Plan, run_plan
from bench.variants import DEFAULT_VARIANTS, SMOKE_VARIANTS, VARIANTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), help="default: all of them"
    )
    parser.add_argument("--n", nargs="+", type=int, default=[1000, 5000], help="subscribers")
    parser.add_argument("--repeat", type=int, default=3, help="measured bursts per session")
    parser.add_argument("--sessions", type=int, default=1, help="server processes per cell")
    parser.add_argument("--burst", type=int, default=20, help="messages per burst")
    parser.add_argument("--size", type=int, default=300, help="approximate message bytes")
    parser.add_argument("--deflate", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--no-stall", action="store_true", help="skip the slow-consumer runs")
    parser.add_argument("--unit", type=float, default=1.0, help="scale every timeout")
    parser.add_argument("--json", type=Path, help="write rows, targets and raw sessions")
    parser.add_argument("--png", type=Path, help="draw throughput/latency/memory per variant")
    parser.add_argument(
        "--cprofile", type=Path, metavar="DIR", help="profile each server's bursts into DIR"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="N=50, 1 repetition, legacy and service, no deflate"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        plan = Plan(
            variants=args.variants or SMOKE_VARIANTS,
            ns=[50],
            deflates=[False],
            repeat=1,
            burst=min(args.burst, 10),
            size=args.size,
            stall=not args.no_stall,
            unit=args.unit,
        )
    else:
        try:
            plan = Plan(
                variants=args.variants or DEFAULT_VARIANTS,
                ns=args.n,
                deflates=[d == "on" for d in dict.fromkeys(args.deflate)],
                repeat=args.repeat,
                sessions=args.sessions,
                burst=args.burst,
                size=args.size,
                stall=not args.no_stall,
                unit=args.unit,
                cprofile=args.cprofile,
            )
        except ValueError as exc:
            print(f"scripts/bench.py: {exc}", file=sys.stderr)
            return 2
    started = time.time()
    meta = {"argv": list(sys.argv[1:] if argv is None else argv), "started": started}
    meta["machine_before"] = machine_info()
    results = run_plan(plan, progress=lambda line: print(line, file=sys.stderr, flush=True))
    meta["seconds"] = time.time() - started
    meta["machine_after"] = machine_info()
    rows = aggregate(results)
    targets = evaluate_targets(rows)
    print(render_table(rows))
    print()
    print(render_targets(targets))
    if args.json is not None:
        document = to_json(rows, targets, results, meta)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    if args.png is not None and not write_png(rows, args.png):
        print("scripts/bench.py: matplotlib is not installed; no PNG", file=sys.stderr)
    failed = [r for r in rows if r.errors or not r.complete]
    for row in failed:
        print(f"{row.variant} N={row.n}: {'; '.join(row.errors) or 'undelivered'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
