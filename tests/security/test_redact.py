"""Redaction of credentials in log lines: strings, records, structlog events."""

from __future__ import annotations

import logging

import pytest

from service.redact import (
    REDACTED,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_event_dict,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
OPAQUE = "opaque-S3CRET-value"


@pytest.mark.parametrize(
    "line",
    [
        f'127.0.0.1:5000 - "WebSocket /ws?token={OPAQUE}" [accepted]',
        f"GET /ws?a=1&token={OPAQUE}&b=2 HTTP/1.1",
        f"GET /ws?access_token={OPAQUE}",
        f"> Authorization: Bearer {OPAQUE}",
        f"authorization: Basic {OPAQUE}",
        f"> Sec-WebSocket-Protocol: envelope.v1, bearer.{OPAQUE}",
        f'< TEXT \'{{"type":"auth","data":{{"token":"{OPAQUE}"}}}}\' [60 bytes]',
        f"{{'token': '{OPAQUE}'}}",
        f"something with a bare jwt {JWT} inside",
        f"a jwt cut short {JWT[:30]}",
    ],
)
def test_secret_never_survives(line: str) -> None:
    cleaned = redact(line)
    assert OPAQUE not in cleaned and JWT[:20] not in cleaned
    assert REDACTED in cleaned
    assert redact(cleaned) == cleaned  # idempotent


@pytest.mark.parametrize(
    "line",
    [
        "token expired",
        "authentication required",
        '127.0.0.1:5000 - "WebSocket /ws?format=envelope" [accepted]',
        "subscribed to training",
    ],
)
def test_harmless_lines_are_untouched(line: str) -> None:
    assert redact(line) == line


def test_filter_keeps_the_args_tuple_shape_for_uvicorns_access_formatter() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/health?token={OPAQUE}", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert record.args[2] == f"/health?token={REDACTED}"
    assert OPAQUE not in record.getMessage()


def test_filter_renders_object_args_that_hide_a_secret() -> None:
    class Frame:
        def __str__(self) -> str:
            return f'TEXT \'{{"token":"{OPAQUE}"}}\''

    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "< %s", (Frame(),), None)
    RedactingFilter().filter(record)
    assert OPAQUE not in record.getMessage()


def test_install_is_idempotent_and_filters_the_named_loggers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "tests.security.redact-probe"
    first = install_log_redaction([name])
    second = install_log_redaction([name])
    logger = logging.getLogger(name)
    assert first is second and logger.filters.count(first) == 1
    with caplog.at_level(logging.DEBUG, logger=name):
        logger.info("%s - %s", "client", f"/ws?token={OPAQUE}")
    assert caplog.records and OPAQUE not in caplog.text
    logger.removeFilter(first)


def test_structlog_processor_scrubs_nested_values() -> None:
    event = {"event": "x", "url": f"/ws?token={OPAQUE}", "nested": {"h": [f"Bearer {OPAQUE}"]}}
    out = redact_event_dict(None, "info", event)
    assert OPAQUE not in repr(out)
