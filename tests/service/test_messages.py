from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.messages import (
    MessageType,
    WebSocketMessage,
    encode,
    envelope_json_schema,
    with_sequence,
)


def test_guide_constructor_works_as_written() -> None:
    message = WebSocketMessage(
        type=MessageType.TRAINING_PROGRESS,
        data={"session_id": "s", "progress": 0.5, "current_epoch": 3, "loss": 0.2, "metrics": {}},
        timestamp=datetime.now().isoformat(),
    )
    assert message.type is MessageType.TRAINING_PROGRESS
    assert orjson.loads(encode(message))["type"] == "training_progress"


def test_timestamp_defaults_to_utc_iso() -> None:
    stamp = WebSocketMessage(type=MessageType.CUSTOM).timestamp
    assert datetime.fromisoformat(stamp).utcoffset() is not None


def test_type_accepts_well_known_and_app_types_and_rejects_invalid_names() -> None:
    assert WebSocketMessage(type="model_created").type is MessageType.MODEL_CREATED
    assert WebSocketMessage(type="job_done").to_wire()["type"] == "job_done"
    for bad in ("Job Done", "", "9lives", "x" * 65):
        with pytest.raises(ValueError):
            WebSocketMessage(type=bad)


def test_schema_lists_registered_app_types() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "service.schema", "--type", "job_done", "--type", "log_line"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    enum = orjson.loads(out)["properties"]["type"]["enum"]
    assert {"job_done", "log_line", "training_progress"} <= set(enum)
    bad = subprocess.run(
        [sys.executable, "-m", "service.schema", "--type", "Bad Type"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "invalid message type" in bad.stderr


def test_encode_omits_absent_optional_fields() -> None:
    wire = orjson.loads(encode(WebSocketMessage(type=MessageType.PONG)))
    assert set(wire) == {"type", "data", "timestamp"}


def test_encode_refuses_unserializable_data() -> None:
    with pytest.raises(TypeError):
        encode(WebSocketMessage(type=MessageType.CUSTOM, data={"x": object()}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    seq=st.integers(1, 2**40),
    epoch=st.text(max_size=12),
    topic=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
)
def test_with_sequence_equals_encoding_with_seq(
    data: dict[str, object], seq: int, epoch: str, topic: str | None
) -> None:
    message = WebSocketMessage(type=MessageType.CUSTOM, data=data, topic=topic)
    spliced = orjson.loads(with_sequence(encode(message), seq, epoch))
    direct = message.model_copy(update={"seq": seq, "epoch": epoch}).to_wire()
    assert spliced == direct


def test_json_schema_lists_every_type() -> None:
    schema = envelope_json_schema()
    text = orjson.dumps(schema).decode()
    for member in MessageType:
        assert f'"{member.value}"' in text
    assert "type" in schema["required"]
