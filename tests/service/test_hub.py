"""Hub behaviour with MockWebSocket: no sockets, real event loop."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from service import (
    MessageType,
    OverflowPolicy,
    SendLimits,
    WebSocketMessage,
    WebSocketService,
    websocket_service,
)
from service.errors import ServiceStopped, UnknownConnection
from service.testing import MockWebSocket


def progress(value: float, **extra: Any) -> WebSocketMessage:
    return WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"progress": value, **extra})


async def test_the_migration_guides_test_passes_as_written() -> None:
    mock_websocket = MockWebSocket()
    connection_id = await websocket_service.connect(mock_websocket)

    await websocket_service.subscribe(connection_id, "training")

    message = WebSocketMessage(
        type=MessageType.TRAINING_PROGRESS,
        data={"progress": 0.5},
        timestamp=datetime.now().isoformat(),
    )

    await websocket_service.broadcast(message, topic="training")
    assert len(mock_websocket.sent_messages) == 2  # connection + progress
    await websocket_service.disconnect(connection_id)


async def test_connect_accepts_and_announces_the_id() -> None:
    service = WebSocketService(heartbeat_interval=None)
    socket = MockWebSocket()
    cid = await service.connect(socket, {"endpoint": "main"})
    assert socket.accepted
    first = socket.sent_messages[0]
    assert first["type"] == "connection_established"
    assert first["data"]["connection_id"] == cid
    assert first["data"]["metadata"] == {"endpoint": "main"}


async def test_broadcast_reaches_topic_subscribers_only_with_seq() -> None:
    service = WebSocketService(heartbeat_interval=None)
    a, b = MockWebSocket(), MockWebSocket()
    ca = await service.connect(a)
    cb = await service.connect(b)
    await service.subscribe(ca, "training")
    await service.subscribe(cb, "models")
    assert await service.broadcast(progress(0.1), topic="training") == 1
    assert await service.broadcast(progress(0.2), topic="training") == 1
    got = a.of_type("training_progress")
    assert [m["seq"] for m in got] == [1, 2]
    assert all(m["topic"] == "training" for m in got)
    assert b.of_type("training_progress") == []
    assert await service.broadcast(progress(0.3)) == 2  # topic=None: everyone
    assert len(b.of_type("training_progress")) == 1


async def test_unsubscribe_and_disconnect_stop_delivery() -> None:
    service = WebSocketService(heartbeat_interval=None)
    a = MockWebSocket()
    ca = await service.connect(a)
    await service.subscribe(ca, "t")
    await service.unsubscribe(ca, "t")
    await service.broadcast(progress(1), topic="t")
    assert a.of_type("training_progress") == []
    await service.subscribe(ca, "t")
    await service.disconnect(ca)
    await service.broadcast(progress(1), topic="t")
    assert a.of_type("training_progress") == []
    assert service.stats()["connections"] == 0
    assert service.stats()["subscriptions"] == 0
    with pytest.raises(UnknownConnection):
        await service.subscribe(ca, "t")


async def test_client_protocol_acks_pong_and_errors() -> None:
    service = WebSocketService(heartbeat_interval=None)
    a = MockWebSocket()
    cid = await service.connect(a)
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"training"},"id":"1"}')
    await service.handle_message(cid, '{"type":"ping","id":"2"}')
    await service.handle_message(cid, "{oops")
    await service.handle_message(cid, b"\x00binary")
    await service.handle_message(cid, '{"type":"unsubscribe","data":{"topic":"training"},"id":"3"}')
    kinds = [(m["type"], m.get("id")) for m in a.sent_messages[1:]]
    assert kinds == [
        ("subscribed", "1"),
        ("pong", "2"),
        ("error", None),
        ("error", None),
        ("unsubscribed", "3"),
    ]
    codes = [m["data"]["code"] for m in a.of_type("error")]
    assert codes == ["invalid_json", "binary_not_supported"]
    assert service.is_connected(cid)


async def test_handlers_sync_async_missing_and_failing() -> None:
    service = WebSocketService(heartbeat_interval=None)
    seen: list[tuple[str, dict[str, Any]]] = []

    async def on_custom(connection_id: str, data: dict[str, Any]) -> None:
        seen.append((connection_id, data))

    def on_status(connection_id: str, data: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    service.register_event_handler(MessageType.CUSTOM, on_custom)
    service.register_event_handler(MessageType.SYSTEM_STATUS, on_status)
    a, b = MockWebSocket(), MockWebSocket()
    cid = await service.connect(a)
    other = await service.connect(b)
    await service.subscribe(other, "t")
    await service.handle_message(cid, '{"type":"custom","data":{"x":1}}')
    await service.handle_message(cid, '{"type":"system_status","id":"s"}')
    await service.handle_message(cid, '{"type":"model_created"}')
    assert seen == [(cid, {"x": 1})]
    errors = a.of_type("error")
    assert [e["data"]["code"] for e in errors] == ["handler_error", "unknown_type"]
    assert errors[0]["id"] == "s"
    await service.broadcast(progress(1), topic="t")
    assert len(b.of_type("training_progress")) == 1  # the other client never noticed
    assert service.stats()["handler_errors"] == 1


async def test_too_many_subscriptions_is_an_error_not_a_close() -> None:
    service = WebSocketService(heartbeat_interval=None, max_subscriptions=2)
    a = MockWebSocket()
    cid = await service.connect(a)
    for topic in ("a", "b", "c"):
        await service.handle_message(cid, f'{{"type":"subscribe","data":{{"topic":"{topic}"}}}}')
    assert [m["data"]["code"] for m in a.of_type("error")] == ["too_many_subscriptions"]
    assert service.topics_of(cid) == {"a", "b"}


async def test_retained_last_value_per_key_on_subscribe() -> None:
    service = WebSocketService(heartbeat_interval=None, retain={"training": "session_id"})
    await service.broadcast(progress(0.1, session_id="s1"), topic="training")
    await service.broadcast(progress(0.2, session_id="s2"), topic="training")
    await service.broadcast(progress(0.3, session_id="s1"), topic="training")
    late = MockWebSocket()
    cid = await service.connect(late)
    await service.handle_message(cid, '{"type":"subscribe","data":{"topic":"training"}}')
    after = late.sent_messages[1:]
    assert after[0]["type"] == "subscribed"
    assert after[0]["data"]["seq"] == 3
    assert [(m["data"]["session_id"], m["data"]["progress"]) for m in after[1:]] == [
        ("s2", 0.2),
        ("s1", 0.3),
    ]


async def test_stalled_socket_is_bounded_and_others_keep_receiving() -> None:
    service = WebSocketService(
        heartbeat_interval=None, send_limits=SendLimits(max_messages=5, max_bytes=10**6)
    )
    slow, fast = MockWebSocket(), MockWebSocket()
    cs = await service.connect(slow)
    cf = await service.connect(fast)
    for cid in (cs, cf):
        await service.subscribe(cid, "t")
    slow.stalled = True
    for i in range(20):
        await service.broadcast(progress(i), topic="t")
    assert [m["data"]["progress"] for m in fast.of_type("training_progress")] == list(range(20))
    await asyncio.sleep(0)
    assert not service.is_connected(cs)
    slow.release()  # the client reads again: now it can take the close frame
    await asyncio.sleep(0.05)
    assert slow.closed is not None and slow.closed[0] == 1013
    stats = service.stats()
    assert stats["closed_slow"] == 1
    assert stats["messages_dropped"] >= 5


async def test_drop_oldest_policy_keeps_the_newest() -> None:
    service = WebSocketService(
        heartbeat_interval=None,
        send_limits=SendLimits(max_messages=3, policy=OverflowPolicy.DROP_OLDEST),
    )
    slow = MockWebSocket()
    cid = await service.connect(slow)
    await service.subscribe(cid, "t")
    slow.stalled = True
    for i in range(10):
        await service.broadcast(progress(i), topic="t")
    slow.release()
    for _ in range(20):
        await asyncio.sleep(0)
    got = [m["data"]["progress"] for m in slow.of_type("training_progress")]
    assert got == [0, 7, 8, 9]  # 0 was in flight; 1-6 dropped
    assert service.connection(cid).dropped == 6
    assert service.is_connected(cid)


async def test_failed_send_removes_the_connection_and_its_subscriptions() -> None:
    service = WebSocketService(heartbeat_interval=None)
    dead = MockWebSocket()
    cid = await service.connect(dead)
    await service.subscribe(cid, "t")
    dead.fail = True
    await service.broadcast(progress(1), topic="t")
    await asyncio.sleep(0.01)
    assert not service.is_connected(cid)
    assert service.stats()["subscriptions"] == 0
    assert service.stats()["closed_send_failed"] == 1


async def test_heartbeat_and_liveness_with_a_fake_clock() -> None:
    now = [1000.0]
    service = WebSocketService(heartbeat_interval=10, heartbeat_timeout=5, clock=lambda: now[0])
    chatty, silent = MockWebSocket(), MockWebSocket()
    cc = await service.connect(chatty)
    cs = await service.connect(silent)
    legacy = await service.connect(MockWebSocket(), heartbeat=False)
    now[0] += 10
    assert service.check_liveness() == []
    assert len(chatty.of_type("heartbeat")) == 1
    await service.handle_message(cc, '{"type":"pong"}')
    now[0] += 10
    assert service.check_liveness() == [cs]
    await asyncio.sleep(0.01)
    assert silent.closed is not None and silent.closed[0] == 4408
    assert service.is_connected(cc)
    assert service.is_connected(legacy)


async def test_stop_closes_with_1001_and_refuses_connections_while_stopping() -> None:
    service = WebSocketService(heartbeat_interval=0.05)
    await service.start()
    sockets = [MockWebSocket() for _ in range(3)]
    for s in sockets:
        await service.connect(s)
    stuck = MockWebSocket()
    await service.connect(stuck)
    stuck.stalled = True  # its close frame never completes: stop() must not wait forever
    service.close_timeout = 0.2
    stopping = asyncio.ensure_future(service.stop(timeout=1))
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceStopped):
        await service.connect(MockWebSocket())
    await asyncio.wait_for(stopping, 3)
    assert all(s.closed == (1001, "server shutting down") for s in sockets)
    assert service.stats()["connections"] == 0
    await service.start()  # restartable
    await service.connect(MockWebSocket())
    await service.stop()


async def test_broadcast_rejects_bad_topic_and_unencodable_data() -> None:
    service = WebSocketService(heartbeat_interval=None)
    with pytest.raises(Exception, match="topic"):
        await service.broadcast(progress(1), topic="bad topic")
    with pytest.raises(TypeError):
        await service.broadcast(
            WebSocketMessage(type=MessageType.CUSTOM, data={"x": object()}), topic="t"
        )


async def test_codec_renders_once_per_broadcast_and_can_skip() -> None:
    service = WebSocketService(heartbeat_interval=None)
    calls: list[str] = []

    def legacy(wire: dict[str, Any]) -> str | None:
        calls.append(wire["type"])
        if wire["type"] != "training_progress":
            return None
        return f'{{"type":"training_update","progress":{wire["data"]["progress"]}}}'

    service.register_codec("legacy", legacy)
    olds = [MockWebSocket() for _ in range(3)]
    for s in olds:
        cid = await service.connect(s, codec="legacy", announce=False)
        await service.subscribe(cid, "t")
    await service.broadcast(progress(0.5), topic="t")
    await service.broadcast(WebSocketMessage(type=MessageType.MODEL_CREATED), topic="t")
    assert calls == ["training_progress", "model_created"]
    for s in olds:
        assert s.sent_messages == [{"type": "training_update", "progress": 0.5}]
