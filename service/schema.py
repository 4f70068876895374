"""``python -m service.schema``: print the envelope's JSON Schema for front-end teams.

    python -m service.schema                                  # well-known types
    python -m service.schema --type job_done --type log_line  # plus the app's
    python -m service.schema --types myapp.events:EVENT_TYPES # an iterable or callable

With app types the schema's ``type`` lists exactly those plus the well-known
ones; without, any valid lowercase type name is accepted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

import orjson

from .messages import envelope_json_schema


def load_object(spec: str) -> object:
    """Import ``package.module:attribute`` (raises ``ValueError`` naming what is wrong)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r}: expected package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{spec!r}: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{spec!r}: {module_name!r} has no attribute {attribute!r}") from None


def _app_types(spec: str) -> list[str]:
    value = load_object(spec)
    if callable(value):
        value = value()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{spec!r} must be (or return) an iterable of type names")
    return [str(name) for name in value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.schema", description=__doc__)
    parser.add_argument("--type", action="append", default=[], help="an app event type")
    parser.add_argument("--types", help="package.module:attribute listing app event types")
    args = parser.parse_args(argv)
    try:
        names = [*args.type, *(_app_types(args.types) if args.types else [])]
        schema = envelope_json_schema(names)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
