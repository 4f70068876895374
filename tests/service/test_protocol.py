from __future__ import annotations

import pytest

from service.errors import ErrorCode, ProtocolError
from service.messages import MessageType
from service.protocol import (
    Dispatch,
    HeartbeatPolicy,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
    error_message,
    parse_client_frame,
    subscription_ack,
)


def parse(text: str, max_size: int | None = 1024) -> object:
    return parse_client_frame(text, max_size=max_size)


def test_subscribe_with_topic_in_data_or_top_level() -> None:
    assert parse('{"type":"subscribe","data":{"topic":"training"},"id":"7"}') == Subscribe(
        "training", "7"
    )
    assert parse('{"type":"unsubscribe","topic":"models","id":3}') == Unsubscribe("models", "3")


def test_ping_pong_heartbeat_and_dispatch() -> None:
    assert parse('{"type":"ping","id":"p"}') == Ping("p")
    assert parse('{"type":"pong"}') == Pong()
    assert parse('{"type":"heartbeat"}') == Pong()
    assert parse('{"type":"custom","data":{"a":1}}') == Dispatch(MessageType.CUSTOM, {"a": 1}, None)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.INVALID_JSON),
        ("[1,2]", ErrorCode.INVALID_MESSAGE),
        ('{"data":{}}', ErrorCode.MISSING_FIELD),
        ('{"type":"Launch Rockets!"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":42}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"subscribed","data":{"topic":"x"}}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"subscribe"}', ErrorCode.MISSING_FIELD),
        ('{"type":"subscribe","data":{"topic":""}}', ErrorCode.MISSING_FIELD),
        ('{"type":"subscribe","data":{"topic":"$all"}}', ErrorCode.INVALID_TOPIC),
        ('{"type":"subscribe","data":{"topic":"a b"}}', ErrorCode.INVALID_TOPIC),
        ('{"type":"subscribe","data":{"topic":"' + "x" * 129 + '"}}', ErrorCode.INVALID_TOPIC),
        ('{"type":"custom","data":[1]}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"ping","id":{"x":1}}', ErrorCode.INVALID_MESSAGE),
        ('{"type":"ping","pad":"' + "x" * 2000 + '"}', ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
def test_bad_frames_get_a_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(text)
    assert caught.value.code is code


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    text = '{"type":"ping","pad":"' + "é" * 300 + '"}'  # 322 characters, 622 bytes
    parse(text, max_size=700)
    with pytest.raises(ProtocolError):
        parse(text, max_size=600)


def test_error_reply_echoes_request_id() -> None:
    try:
        parse('{"type":"subscribe","id":"r1"}')
    except ProtocolError as error:
        reply = error_message(error).to_wire()
    assert reply["id"] == "r1"
    assert reply["data"]["code"] == "missing_field"


def test_ack_carries_topic_position() -> None:
    ack = subscription_ack(Subscribe("t", "1"), seq=4, epoch="e").to_wire()
    assert ack["type"] == "subscribed"
    assert ack["data"] == {"topic": "t", "seq": 4, "epoch": "e"}


def test_heartbeat_policy_deadline() -> None:
    policy = HeartbeatPolicy(interval=10, timeout=5)
    assert not policy.is_dead(last_seen=100, now=115)
    assert policy.is_dead(last_seen=100, now=115.1)
    with pytest.raises(ValueError):
        HeartbeatPolicy(interval=0, timeout=1)
