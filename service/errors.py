"""Exceptions, wire error codes and close codes of the service.

Exception tree::

    WebSocketServiceError
    ├── ProtocolError          a client frame the protocol rejects (has ``code``)
    ├── UnknownConnection      an operation named a connection id that is not registered
    ├── ServiceStopped         the service is stopping or stopped
    ├── ConnectionRefused      an access rule refused a client (has ``reason`` and ``code``)
    │   └── AuthenticationFailed  credentials missing, malformed, expired or invalid
    └── BrokerError            the broker cannot publish or subscribe right now
        └── BrokerUnavailable  the broker's backend is unreachable (fail fast, retry later)

Error codes travel in ``error`` messages (``data.code``); close codes tell the
client whether to reconnect: 1001 and 1013 mean "reconnect (with backoff)",
1008 and 1009 mean "do not reconnect with the same behaviour". A client refused
before the handshake completes sees HTTP 403 instead of a close code.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "AuthenticationFailed",
    "BrokerError",
    "BrokerUnavailable",
    "CloseCode",
    "ConnectionRefused",
    "ErrorCode",
    "ProtocolError",
    "ServiceStopped",
    "UnknownConnection",
    "WebSocketServiceError",
]


class ErrorCode(StrEnum):
    """Machine-readable ``data.code`` of an ``error`` message."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_TOPIC = "invalid_topic"
    MESSAGE_TOO_LARGE = "message_too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    HANDLER_ERROR = "handler_error"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    INVALID_TOKEN = "invalid_token"  #: a mid-connection ``auth`` token failed verification
    PRINCIPAL_MISMATCH = "principal_mismatch"  #: a valid token of another principal


class CloseCode(IntEnum):
    """WebSocket close codes the service uses, and what they ask of the client."""

    NORMAL = 1000  #: closed on purpose; no reconnect needed
    GOING_AWAY = 1001  #: server shutting down; reconnect with backoff
    POLICY_VIOLATION = 1008  #: a rule was broken (or the token expired); do not retry unchanged
    MESSAGE_TOO_BIG = 1009  #: a frame exceeded the server's hard size limit
    INTERNAL_ERROR = 1011  #: unexpected server failure; reconnect with backoff
    TRY_AGAIN_LATER = 1013  #: client too slow (send buffer full); reconnect with backoff
    HEARTBEAT_TIMEOUT = 4408  #: no answer to heartbeats in time; reconnect


class WebSocketServiceError(Exception):
    """Root of every exception the service raises on purpose."""


class ProtocolError(WebSocketServiceError):
    """A client frame was rejected; ``code`` and ``detail`` go back in an ``error``."""

    def __init__(self, code: ErrorCode, detail: str, *, request_id: str | None = None) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.request_id = request_id


class UnknownConnection(WebSocketServiceError, LookupError):
    """No connection is registered under ``connection_id``."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"unknown connection id {connection_id!r}")
        self.connection_id = connection_id


class ServiceStopped(WebSocketServiceError):
    """The service is stopping or stopped and accepts no new connections."""


class ConnectionRefused(WebSocketServiceError):
    """An access rule refused a client; the socket has already been closed.

    Before the handshake completed the client saw HTTP 403; after it, a close frame
    with ``code`` (1008 unless said otherwise) and ``reason``. ``reason`` is short,
    safe to show and never contains a credential.
    """

    def __init__(self, reason: str, *, code: int = CloseCode.POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class AuthenticationFailed(ConnectionRefused):
    """Credentials were missing, malformed, expired or invalid.

    Authenticators raise it (instead of returning ``None``) to give a precise
    ``reason``; it must not quote the credential.
    """


class BrokerError(WebSocketServiceError):
    """The broker could not carry out a publish or subscription."""


class BrokerUnavailable(BrokerError):
    """The broker's backend is unreachable; the call failed fast instead of waiting."""
