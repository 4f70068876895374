"""A hypothesis state machine over the client protocol against the hub.

Clients (MockWebSocket) connect, subscribe, unsubscribe, send garbage, oversize
and binary frames, ping and disconnect while the server broadcasts. A model
predicts every reply; after each step the machine checks that

- the registry is consistent and matches the model (no leaked subscription,
  ``stats()`` agrees, the broker holds exactly the topics with subscribers);
- every client received exactly the predicted frames: each request with an id
  answered exactly once, each broadcast delivered once to each subscriber and
  to nobody else, so misbehaving clients never affect the others;
- a client closed for an oversize frame got 1009, and nothing more.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from service import MessageType, WebSocketMessage, WebSocketService
from service.hub import ALL_TOPIC
from service.testing import MockWebSocket

TOPICS = ("a", "b", "c", "secret")
FORBIDDEN = "secret"
MAX_SIZE = 256
MAX_SUBSCRIPTIONS = 2

#: What a client expects next: (type, id, code-or-topic).
Expected = tuple[str, str | None, str | None]


@dataclass
class Client:
    socket: MockWebSocket
    topics: set[str] = field(default_factory=set)
    seen: int = 1  # connection_established was checked on connect
    expected: list[Expected] = field(default_factory=list)


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = 0.0
        self.clients: dict[str, Client] = {}
        self.closed: list[tuple[MockWebSocket, int]] = []  # socket, frames it had then
        self.ids = itertools.count()
        self.policy = "close"
        self.service = WebSocketService(heartbeat_interval=None)

    # -- plumbing ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        result = self.loop.run_until_complete(coro)
        # let deferred closes and broker reconciliation finish
        for _ in range(3):
            self.loop.run_until_complete(asyncio.sleep(0))
        return result

    def next_id(self) -> str:
        return f"r{next(self.ids)}"

    def send(self, cid: str, frame: str | bytes) -> None:
        self.now += 0.01
        self.run(self.service.handle_message(cid, frame))

    def too_big(self, cid: str) -> None:
        """The model's view of an oversize frame under the configured policy."""
        if self.policy == "close":
            client = self.clients.pop(cid)
            self.closed.append((client.socket, len(client.socket.sent_text)))
            assert client.socket.closed == (1009, "message too big")
            assert len(client.socket.sent_text) == client.seen  # nothing after the close
        else:
            self.clients[cid].expected.append(("error", None, "message_too_large"))

    def teardown(self) -> None:
        try:
            self.run(self.service.stop(timeout=1))
        finally:
            self.loop.close()

    # -- rules -------------------------------------------------------------------

    @initialize(policy=st.sampled_from(["close", "error"]))
    def configure(self, policy: str) -> None:
        self.policy = policy
        self.service = WebSocketService(
            heartbeat_interval=None,
            max_message_size=MAX_SIZE,
            message_too_large=policy,
            max_subscriptions=MAX_SUBSCRIPTIONS,
            authorize=lambda principal, topic, action: topic != FORBIDDEN,
            clock=lambda: self.now,
        )

    @rule()
    def connect(self) -> None:
        socket = MockWebSocket()
        cid = self.run(self.service.connect(socket))
        assert socket.sent_messages[0]["type"] == "connection_established"
        self.clients[cid] = Client(socket)

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), topic=st.sampled_from(TOPICS))
    def subscribe(self, data: st.DataObject, topic: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        client, rid = self.clients[cid], self.next_id()
        frame = {"type": "subscribe", "data": {"topic": topic}, "id": rid}
        self.send(cid, orjson.dumps(frame).decode())
        if topic == FORBIDDEN:
            client.expected.append(("error", rid, "forbidden"))
        elif topic not in client.topics and len(client.topics) >= MAX_SUBSCRIPTIONS:
            client.expected.append(("error", rid, "too_many_subscriptions"))
        else:
            client.topics.add(topic)
            client.expected.append(("subscribed", rid, topic))

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), topic=st.sampled_from(TOPICS))
    def unsubscribe(self, data: st.DataObject, topic: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        client, rid = self.clients[cid], self.next_id()
        self.send(cid, orjson.dumps({"type": "unsubscribe", "topic": topic, "id": rid}).decode())
        client.topics.discard(topic)
        client.expected.append(("unsubscribed", rid, topic))

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def ping(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        rid = self.next_id()
        self.send(cid, orjson.dumps({"type": "ping", "id": rid}).decode())
        self.clients[cid].expected.append(("pong", rid, None))

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), text=st.text(max_size=300))
    def garbage(self, data: st.DataObject, text: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        frame = "\x00" + text  # a NUL outside a string: never valid JSON
        self.send(cid, frame)
        if len(frame.encode()) > MAX_SIZE:
            self.too_big(cid)
        else:
            self.clients[cid].expected.append(("error", None, "invalid_json"))

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), blob=st.binary(max_size=300))
    def binary(self, data: st.DataObject, blob: bytes) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        self.send(cid, blob)
        if len(blob) > MAX_SIZE:
            self.too_big(cid)
        else:
            self.clients[cid].expected.append(("error", None, "binary_not_supported"))

    @precondition(lambda self: self.clients)
    @rule(data=st.data(), extra=st.integers(min_value=1, max_value=10_000))
    def oversize(self, data: st.DataObject, extra: int) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        frame = orjson.dumps(
            {"type": "ping", "id": self.next_id(), "pad": "x" * (MAX_SIZE + extra)}
        )
        self.send(cid, frame.decode())
        self.too_big(cid)  # never parsed, so never answered by id

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.clients)))
        self.run(self.service.disconnect(cid))
        socket = self.clients.pop(cid).socket
        self.closed.append((socket, len(socket.sent_text)))

    @rule(topic=st.sampled_from((*TOPICS, None)))
    def broadcast(self, topic: str | None) -> None:
        message = WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data={"n": next(self.ids)})
        self.run(self.service.broadcast(message, topic=topic))
        for client in self.clients.values():
            if topic is None or topic in client.topics:
                client.expected.append(("training_progress", None, topic))

    # -- invariants --------------------------------------------------------------

    @invariant()
    def every_client_got_exactly_what_was_predicted(self) -> None:
        for client in self.clients.values():
            fresh = client.socket.sent_messages[client.seen :]
            got: list[Expected] = []
            for message in fresh:
                kind = message["type"]
                if kind == "error":
                    detail = message["data"]["code"]
                elif kind in ("subscribed", "unsubscribed"):
                    detail = message["data"]["topic"]
                else:
                    detail = message.get("topic")
                got.append((kind, message.get("id"), detail))
            assert got == client.expected
            client.seen += len(fresh)
            client.expected.clear()
            assert client.socket.closed is None

    @invariant()
    def no_leaked_subscription(self) -> None:
        service = self.service
        service._registry.check_invariants()
        stats = service.stats()
        assert stats["connections"] == len(self.clients)
        assert stats["subscriptions"] == sum(len(c.topics) for c in self.clients.values())
        for cid, client in self.clients.items():
            assert service.topics_of(cid) == client.topics
        wanted = {t for c in self.clients.values() for t in c.topics}
        assert set(service._registry.topics()) == wanted
        assert service._broker_topics == wanted | ({ALL_TOPIC} if self.clients else set())
        assert not set(service._limiters) - set(self.clients)  # no per-connection leftovers

    @invariant()
    def closed_clients_hear_nothing_more(self) -> None:
        for socket, count in self.closed:
            assert len(socket.sent_text) == count


ProtocolMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestProtocolMachine = ProtocolMachine.TestCase
