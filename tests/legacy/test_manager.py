"""Unit tests for legacy.manager: the old manager with fake sockets, no server."""

from __future__ import annotations

from typing import Any

import pytest

from legacy.manager import NaiveWebSocketManager, WebSocketManager


class FakeWebSocket:
    """Records accept and sends into a log shared by all sockets (to see the order)."""

    def __init__(self, name: str, log: list[tuple[str, str, Any]], *, dead: bool = False) -> None:
        self.name = name
        self.log = log
        self.dead = dead
        self.accepted = False

    async def accept(self) -> None:
        self.accepted = True

    async def send_text(self, data: str) -> None:
        self._check()
        self.log.append((self.name, "text", data))

    async def send_json(self, data: Any) -> None:
        self._check()
        self.log.append((self.name, "json", data))

    def _check(self) -> None:
        if self.dead:
            raise RuntimeError('Cannot call "send" once a close message has been sent.')


@pytest.fixture
def log() -> list[tuple[str, str, Any]]:
    return []


async def connected(
    manager: WebSocketManager, log: list[tuple[str, str, Any]], *names: str
) -> list[FakeWebSocket]:
    sockets = [FakeWebSocket(name, log) for name in names]
    for socket in sockets:
        await manager.connect(socket)
    return sockets


async def test_connect_accepts_then_appends(log: list[tuple[str, str, Any]]) -> None:
    manager = WebSocketManager()
    a, b = await connected(manager, log, "a", "b")
    assert a.accepted and b.accepted
    assert manager.active_connections == [a, b]
    assert manager.connections is manager.active_connections


async def test_connect_does_not_append_when_accept_fails(log: list[tuple[str, str, Any]]) -> None:
    class Refusing(FakeWebSocket):
        async def accept(self) -> None:
            raise OSError("handshake failed")

    manager = WebSocketManager()
    with pytest.raises(OSError):
        await manager.connect(Refusing("x", log))
    assert manager.active_connections == []


async def test_broadcast_reaches_everyone_in_connection_order(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    await connected(manager, log, "a", "b", "c")
    await manager.broadcast({"type": "training_update", "progress": 0.5})
    await manager.broadcast({"type": "status"})
    assert log == [
        ("a", "json", {"type": "training_update", "progress": 0.5}),
        ("b", "json", {"type": "training_update", "progress": 0.5}),
        ("c", "json", {"type": "training_update", "progress": 0.5}),
        ("a", "json", {"type": "status"}),
        ("b", "json", {"type": "status"}),
        ("c", "json", {"type": "status"}),
    ]


async def test_dead_socket_is_removed_and_the_others_still_get_the_message(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    a, b, c = await connected(manager, log, "a", "b", "c")
    b.dead = True
    await manager.broadcast({"n": 1})  # does not raise
    assert [entry[0] for entry in log] == ["a", "c"]
    assert manager.active_connections == [a, c]
    b.dead = False  # even if it came back, it is no longer in the list
    await manager.broadcast({"n": 2})
    assert [entry[0] for entry in log] == ["a", "c", "a", "c"]


async def test_every_dead_socket_is_removed_in_one_broadcast(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    a, b, c = await connected(manager, log, "a", "b", "c")
    a.dead = c.dead = True
    await manager.broadcast({"n": 1})
    assert manager.active_connections == [b]
    assert log == [("b", "json", {"n": 1})]


async def test_disconnect_during_broadcast_does_not_skip_anyone(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    sockets: list[FakeWebSocket] = []

    class Leaving(FakeWebSocket):
        async def send_json(self, data: Any) -> None:
            await super().send_json(data)
            manager.disconnect(self)

    sockets.append(Leaving("a", log))
    sockets.append(FakeWebSocket("b", log))
    for socket in sockets:
        await manager.connect(socket)
    await manager.broadcast({"n": 1})
    assert [entry[0] for entry in log] == ["a", "b"]
    assert manager.active_connections == [sockets[1]]


async def test_naive_broadcast_stops_at_the_dead_socket(log: list[tuple[str, str, Any]]) -> None:
    manager = NaiveWebSocketManager()
    a, b, c = await connected(manager, log, "a", "b", "c")
    b.dead = True
    with pytest.raises(RuntimeError):
        await manager.broadcast({"n": 1})
    assert [entry[0] for entry in log] == ["a"]  # c never got it
    assert manager.active_connections == [a, b, c]  # and b is still there


async def test_send_personal_message_str_as_text_dict_as_json(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    a, b = await connected(manager, log, "a", "b")
    await manager.send_personal_message("hello", b)
    await manager.send_personal_message({"type": "welcome"}, a)
    assert log == [("b", "text", "hello"), ("a", "json", {"type": "welcome"})]


async def test_send_personal_message_failure_raises_and_keeps_the_socket(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    (a,) = await connected(manager, log, "a")
    a.dead = True
    with pytest.raises(RuntimeError):
        await manager.send_personal_message("hello", a)
    assert manager.active_connections == [a]


async def test_disconnect_removes_and_unknown_socket_is_harmless(
    log: list[tuple[str, str, Any]],
) -> None:
    manager = WebSocketManager()
    a, b = await connected(manager, log, "a", "b")
    manager.disconnect(a)
    manager.disconnect(a)
    manager.disconnect(FakeWebSocket("stranger", log))
    assert manager.active_connections == [b]
    await manager.broadcast({"n": 1})
    assert log == [("b", "json", {"n": 1})]


async def test_mock_websocket_of_the_service_fits(log: list[tuple[str, str, Any]]) -> None:
    from service.testing import MockWebSocket

    manager = WebSocketManager()
    mock = MockWebSocket()
    await manager.connect(mock)
    await manager.broadcast({"type": "status", "status": "ready"})
    assert mock.accepted
    assert mock.sent_messages == [{"type": "status", "status": "ready"}]
