"""The new topic-based WebSocketService.

``from service import websocket_service, WebSocketService, WebSocketMessage, MessageType``
gives the migration guide's API; ``websocket_service`` is a module-level default
instance with the in-memory broker.
"""

from .connection import OverflowPolicy, SendLimits
from .errors import CloseCode, ErrorCode, ProtocolError, WebSocketServiceError
from .hub import WebSocketService
from .messages import MessageType, WebSocketMessage, envelope_json_schema

__all__ = [
    "CloseCode",
    "ErrorCode",
    "MessageType",
    "OverflowPolicy",
    "ProtocolError",
    "SendLimits",
    "WebSocketMessage",
    "WebSocketService",
    "WebSocketServiceError",
    "envelope_json_schema",
    "websocket_service",
]

#: The default instance the migration guide imports.
websocket_service = WebSocketService()
