"""``python -m service.schema``: print the envelope's JSON Schema for front-end teams."""

from __future__ import annotations

import sys

import orjson

from .messages import envelope_json_schema


def main() -> None:
    sys.stdout.write(orjson.dumps(envelope_json_schema(), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
