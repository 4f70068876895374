"""The new topic-based WebSocketService (public API re-exports only)."""
