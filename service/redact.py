"""Keep credentials out of log lines.

Servers log request lines: uvicorn writes ``"WebSocket /ws?token=..." [accepted]``
to ``uvicorn.error`` and HTTP requests to ``uvicorn.access``; at DEBUG the
websockets library logs every handshake header (``Authorization``,
``Sec-WebSocket-Protocol: bearer.<token>``) and the start of every frame. A
token in any of them is a credential at rest in log storage.

:func:`redact` rewrites a string; :class:`RedactingFilter` applies it to a log
record's message and each of its arguments (so formatters that unpack
``record.args``, like uvicorn's access formatter, keep working);
:func:`install_log_redaction` attaches one filter to the loggers that see
requests. :func:`redact_event_dict` is the same for structlog processor chains.

Call :func:`install_log_redaction` after the server configured logging (the
service's :func:`~service.asgi.lifespan` does it on startup). A filter on a
logger only sees records logged on that very logger, not on its children, which
is why the list names each logger.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

__all__ = [
    "DEFAULT_LOGGERS",
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "redact_event_dict",
]

REDACTED = "[REDACTED]"

#: Loggers that see request lines, headers or frames of a WebSocket session.
DEFAULT_LOGGERS: tuple[str, ...] = (
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "websockets",
    "websockets.server",
    "websockets.client",
    "service",
    "shim",
)

_SECRET_NAMES = (
    "token|access_token|id_token|refresh_token|jwt|auth_token|api_key|apikey|password|secret"
)

_NOT_DONE = r"(?!\[REDACTED\])"

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # token=... in query strings, token: ... / "token": "..." in text and JSON.
    (
        re.compile(
            rf"(?i)(?<![A-Za-z0-9_])([\"']?)({_SECRET_NAMES})\1(\s*[:=]\s*)([\"']?){_NOT_DONE}"
            r"[^\"'&\s,;}\]#\\]+"
        ),
        rf"\1\2\1\3\4{REDACTED}",
    ),
    # Authorization: <scheme> <credential> as a logged header line.
    (
        re.compile(
            rf"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:[A-Za-z]+ +)?+){_NOT_DONE}[^\s\"',;]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # "Bearer <token>" alone, and the subprotocol entry "bearer.<token>".
    (re.compile(r"(?i)\b(bearer)([ .]+)[A-Za-z0-9\-._~+/]+=*"), rf"\1\2{REDACTED}"),
    # Anything shaped like a JWT (base64url JSON header "eyJ..."), even cut short.
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"), REDACTED),
)


def redact(text: str) -> str:
    """Return ``text`` with tokens, bearer credentials and JWTs replaced by ``[REDACTED]``."""
    if not text:
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth >= 3:
        return value
    if isinstance(value, Mapping):
        return {key: _scrub(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item, depth + 1) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrite a record's message and string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        elif isinstance(record.msg, Mapping):  # structlog's ProcessorFormatter events
            record.msg = _scrub(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_scrub(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = _scrub(record.args)
        # Arguments that are objects render only now (websockets logs Frame
        # objects): check the final text and, if it still holds a secret, freeze it.
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the formatter's problem
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactingFilter()


def install_log_redaction(loggers: Iterable[str] = DEFAULT_LOGGERS) -> RedactingFilter:
    """Attach the shared :class:`RedactingFilter` to each named logger; idempotent.

    Returns the filter, so a caller may also put it on handlers (a handler
    filter sees records from every logger that reaches the handler).
    """
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER


def redact_event_dict(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: redact every string value of the event (nested too).

    Put it right before the renderer in ``structlog.configure(processors=[...])``.
    """
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub(value)
    return event_dict
