"""Bounded fuzzing (hypothesis) of what a client or a legacy producer can feed us.

- ``handle_message``: any text or bytes, random and protocol-shaped. It never
  raises; the client gets at most one reply, of a known type and error code, or
  (oversize, "close" policy) a 1009 close; the registry stays consistent.
- ``Translator.to_standard``/``to_legacy``: any JSON-shaped payload, random and
  rule-shaped. Each returns or raises TranslationError, nothing else.

Each target runs a few hundred examples with no deadline (a few seconds in all);
``FUZZ_EXAMPLES`` raises the count for a longer local session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import ErrorCode, MessageType, WebSocketService
from service.testing import MockWebSocket
from shim.translate import FieldMap, TranslationError, Translator

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_SIZE = 512

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.sampled_from([m.value for m in MessageType]) | st.text(max_size=12)
topics = st.sampled_from(["training", "models", "$all", "", "a b", "x" * 200]) | st.text(
    max_size=20
)


@st.composite
def protocol_frames(draw: st.DrawFn) -> str:
    frame: dict[str, Any] = {}
    if draw(st.booleans()):
        frame["type"] = draw(type_names | json_values)
    if draw(st.booleans()):
        frame["data"] = draw(st.fixed_dictionaries({}, optional={"topic": topics}) | json_values)
    if draw(st.booleans()):
        frame["id"] = draw(json_values)
    if draw(st.booleans()):
        frame["topic"] = draw(topics | json_values)
    return orjson.dumps(frame).decode()


frames = st.one_of(
    protocol_frames(),
    st.text(max_size=600),
    st.binary(max_size=600),
    json_values.map(lambda v: orjson.dumps(v).decode()),
)

_REPLY_TYPES = {"error", "pong", "subscribed", "unsubscribed"}
_CODES = {code.value for code in ErrorCode}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("policy", ["close", "error"])
def test_handle_message_survives_anything(loop: asyncio.AbstractEventLoop, policy: str) -> None:
    async def one(frame: str | bytes) -> None:
        service = WebSocketService(
            heartbeat_interval=None, max_message_size=MAX_SIZE, message_too_large=policy
        )
        service.register_event_handler(MessageType.CUSTOM, lambda cid, data: None)
        socket = MockWebSocket()
        cid = await service.connect(socket)
        await service.handle_message(cid, frame)
        replies = socket.sent_messages[1:]
        size = len(frame.encode() if isinstance(frame, str) else frame)
        if policy == "close" and size > MAX_SIZE:
            assert socket.closed == (1009, "message too big") and replies == []
            assert not service.is_connected(cid)
        else:
            assert len(replies) <= 1
            for reply in replies:
                assert reply["type"] in _REPLY_TYPES
                if reply["type"] == "error":
                    assert reply["data"]["code"] in _CODES and reply["data"]["message"]
            assert service.is_connected(cid)
        service._registry.check_invariants()
        await service.stop(timeout=1)

    @FUZZ
    @given(frame=frames)
    def check(frame: str | bytes) -> None:
        loop.run_until_complete(one(frame))

    check()


def _rule_vocabulary(translator: Translator) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Discriminators, legacy field paths and data paths of the translator's rules."""
    discriminators: list[tuple[str, str]] = []
    legacy: set[str] = {"timestamp"}
    standard: set[str] = set()
    for rule in translator.rules:
        if rule.discriminator is not None:
            discriminators.append(rule.discriminator)
        legacy.update(rule.requires)
        legacy.update(rule.constants)
        standard.update(rule.data_constants)
        for spec in rule.fields:
            if isinstance(spec, str):
                pair = (spec, spec)
            elif isinstance(spec, FieldMap):
                pair = (spec.legacy, spec.standard)
            else:
                pair = spec
            legacy.add(pair[0])
            standard.add(pair[1])
    return discriminators, sorted(legacy), sorted(standard)


def _nest(paths: dict[str, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in paths.items():
        *parents, leaf = path.split(".")
        node = root
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        node[leaf] = value
    return root


TRANSLATOR = Translator()
DISCRIMINATORS, LEGACY_PATHS, DATA_PATHS = _rule_vocabulary(TRANSLATOR)


@st.composite
def legacy_payloads(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(st.dictionaries(st.sampled_from(LEGACY_PATHS), json_values, max_size=6))
    payload = _nest(fields)
    if draw(st.booleans()) and DISCRIMINATORS:
        key, value = draw(st.sampled_from(DISCRIMINATORS))
        payload[key] = value
    payload.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return payload


@st.composite
def wire_messages(draw: st.DrawFn) -> dict[str, Any]:
    data: Any
    if draw(st.booleans()) and DATA_PATHS:
        data = _nest(draw(st.dictionaries(st.sampled_from(DATA_PATHS), json_values, max_size=6)))
    else:
        data = draw(json_values)
    message: dict[str, Any] = {"type": draw(type_names | json_values), "data": data}
    if draw(st.booleans()):
        message["timestamp"] = draw(json_values)
    return message


def test_translator_raises_only_translation_error() -> None:
    @FUZZ
    @given(payload=legacy_payloads() | json_values)
    def forward(payload: Any) -> None:
        try:
            translation = TRANSLATOR.to_standard(payload)
        except TranslationError:
            return
        TRANSLATOR.to_legacy(translation.message)  # may raise TranslationError only

    @FUZZ
    @given(message=wire_messages() | json_values)
    def backward(message: Any) -> None:
        with contextlib.suppress(TranslationError):
            TRANSLATOR.to_legacy(message)

    forward()
    backward()
