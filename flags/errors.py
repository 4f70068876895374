"""Exceptions of the flag provider.

Exception tree::

    FlagsError
    ├── FlagsConfigError   a setting (usually an environment variable) is invalid
    ├── ToggleFileError    a toggles document is unreadable or malformed (has ``source``)
    └── ToggleEditError    an edit of the toggles document cannot be applied safely

The decider itself never raises at decision time: a bad file or an unreachable
server is logged and the previous toggles stay in force.
"""

from __future__ import annotations

__all__ = ["FlagsConfigError", "FlagsError", "ToggleEditError", "ToggleFileError"]


class FlagsError(Exception):
    """Root of every exception this package raises."""


class FlagsConfigError(FlagsError):
    """A setting is invalid; ``name`` is the setting or environment variable."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class ToggleFileError(FlagsError):
    """A toggles document was rejected; ``source`` says where it came from.

    ``problems`` lists every problem found, each prefixed with its JSON path
    (``features[0].strategies[1].variants[0].name: ...``).
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        super().__init__(f"{source}: {shown}")
        self.source = source
        self.problems = problems


class ToggleEditError(FlagsError):
    """An edit would change rules it does not own; edit the file by hand instead."""
