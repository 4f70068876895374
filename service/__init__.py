"""The new topic-based WebSocketService.

``from service import websocket_service, WebSocketService, WebSocketMessage, MessageType``
gives the migration guide's API; ``websocket_service`` is a module-level default
instance with the in-memory broker. The access controls and limits are
configured on ``WebSocketService(...)`` (see ``service/SECURITY.md``).
"""

from .auth import JWTAuthenticator
from .connection import OverflowPolicy, SendLimits
from .errors import (
    AuthenticationFailed,
    CloseCode,
    ConnectionRefused,
    ErrorCode,
    ProtocolError,
    WebSocketServiceError,
)
from .hub import Admission, WebSocketService
from .limits import OversizePolicy, RateLimit
from .messages import (
    MessageType,
    WebSocketMessage,
    envelope_json_schema,
    register_message_types,
    registered_types,
)

__all__ = [
    "Admission",
    "AuthenticationFailed",
    "CloseCode",
    "ConnectionRefused",
    "ErrorCode",
    "JWTAuthenticator",
    "MessageType",
    "OverflowPolicy",
    "OversizePolicy",
    "ProtocolError",
    "RateLimit",
    "SendLimits",
    "WebSocketMessage",
    "WebSocketService",
    "WebSocketServiceError",
    "envelope_json_schema",
    "register_message_types",
    "registered_types",
    "websocket_service",
]

#: The default instance the migration guide imports.
websocket_service = WebSocketService()
