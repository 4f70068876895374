"""``ws-migration``: the toolkit's one console command, installed by pip.

    ws-migration flags [--file F] status|set|kill|export|bench ...
    ws-migration compare [--rules package.module:callable] SCENARIOS...
    ws-migration record --url ws://127.0.0.1:8000/ws --out scenarios/recorded.json

Each sub-command is a module of its own (:mod:`flags.cli`, :mod:`shim.compare_cli`)
and has its own ``--help``. This module only dispatches; it sits on top of every
package and nothing imports it. Exit status: the sub-command's (2: usage).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

_PROG = "ws-migration"


def _flags(argv: Sequence[str]) -> int:
    from flags import cli

    return cli.main(argv, prog=f"{_PROG} flags")


def _compare(argv: Sequence[str]) -> int:
    from . import compare_cli

    return compare_cli.compare_main(argv, prog=f"{_PROG} compare")


def _record(argv: Sequence[str]) -> int:
    from . import compare_cli

    return compare_cli.record_main(argv, prog=f"{_PROG} record")


# Imported lazily: ``ws-migration flags`` need not load the replay machinery.
_COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "flags": (_flags, "read and change the migration stage of each endpoint"),
    "compare": (_compare, "replay scenarios through legacy and new; diff; check round trips"),
    "record": (_record, "record what an old client receives from a local backend"),
}


def _usage() -> str:
    width = max(map(len, _COMMANDS))
    commands = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in _COMMANDS.items())
    return (
        f"usage: {_PROG} {{{','.join(_COMMANDS)}}} ...\n\n"
        f"The WebSocket migration toolkit's operator command.\n\ncommands:\n{commands}\n\n"
        f"Run '{_PROG} COMMAND --help' for a command's options.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ws-migration`` on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(_usage(), end="")
        return 0
    if not args or args[0] not in _COMMANDS:
        problem = "a command is required" if not args else f"unknown command {args[0]!r}"
        print(f"{_usage()}\n{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    run, _ = _COMMANDS[args[0]]
    try:
        return run(args[1:])
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
