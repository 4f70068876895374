"""Test helpers: a MockWebSocket that records what the service sent.

With it the migration guide's "Testing the Migration" example runs as written::

    mock_websocket = MockWebSocket()
    connection_id = await websocket_service.connect(mock_websocket)
    ...
    assert len(mock_websocket.sent_messages) == 2  # connection + progress
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

__all__ = ["MockWebSocket"]


class MockWebSocket:
    """A socket double: records accepted state, sent messages (parsed) and the close.

    ``stalled = True`` makes every send wait until ``release()``, which is how a
    test plays a client that stopped reading. ``fail = True`` makes sends raise.
    """

    def __init__(self) -> None:
        self.accepted = False
        self.subprotocol: str | None = None
        self.sent_text: list[str] = []
        self.closed: tuple[int, str | None] | None = None
        self.stalled = False
        self.fail = False
        self._released = asyncio.Event()

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """Every sent frame, parsed from JSON."""
        return [orjson.loads(text) for text in self.sent_text]

    def of_type(self, type_name: str) -> list[dict[str, Any]]:
        return [m for m in self.sent_messages if m.get("type") == type_name]

    async def accept(self, subprotocol: str | None = None) -> None:
        self.accepted = True
        self.subprotocol = subprotocol

    async def send_text(self, data: str) -> None:
        if self.fail:
            raise ConnectionResetError("mock socket failed")
        if self.stalled:
            await self._released.wait()
        self.sent_text.append(data)

    async def send_json(self, data: Any) -> None:
        await self.send_text(orjson.dumps(data).decode())

    def release(self) -> None:
        """Let a stalled socket's waiting sends complete."""
        self.stalled = False
        self._released.set()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.stalled:  # a client that does not read cannot take the close frame either
            await self._released.wait()
        self.closed = (code, reason)
