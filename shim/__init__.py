"""Compatibility shim between the legacy WebSocketManager and WebSocketService."""
