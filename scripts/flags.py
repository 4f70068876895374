"""Operator command for the migration flags: a thin wrapper over :mod:`flags.cli`.

    python scripts/flags.py status                  # same as: ws-migration flags status
    python scripts/flags.py set /ws/training shadow

See ``flags/cli.py`` (or ``--help``) for the sub-commands and exit statuses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a file, this script's folder is first on sys.path, where its own name
# would shadow the ``flags`` package; the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flags import cli


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
