"""Replay recorded scenarios and diff them: a thin wrapper over :mod:`shim.compare_cli`.

    python scripts/compare.py scenarios              # same as: ws-migration compare scenarios
    python scripts/compare.py record --url ws://127.0.0.1:8000/ws --out scenarios/r.json

See ``shim/compare_cli.py`` (or ``--help``) for the options and exit statuses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a file, this script's folder is first on sys.path; the repository root
# must come first so that the packages import (as in scripts/flags.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shim import compare_cli


def main(argv: Sequence[str] | None = None) -> int:
    return compare_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
