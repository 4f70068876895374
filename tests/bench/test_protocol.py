"""The benchmark's payload marks survive every variant's encoding; percentiles and summaries."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from bench.protocol import legacy_payload, pad_for, parse_marks, service_data
from bench.stats import percentile, ratio, summarize
from service import MessageType, WebSocketMessage
from service.messages import encode, with_sequence
from shim.translate import Translator


def encodings(burst: int) -> list[bytes]:
    payload = legacy_payload(burst, 3, pad_for(300))
    message = WebSocketMessage(type=MessageType.TRAINING_PROGRESS, data=service_data(burst, 3, ""))
    legacy_rendered = Translator().to_legacy(Translator().to_standard(payload).message)
    return [
        # Starlette's send_json (the legacy manager)
        json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(),
        orjson.dumps(payload),  # raw websockets
        with_sequence(encode(message.model_copy(update={"topic": "training"})), 7, "ab12"),
        orjson.dumps(legacy_rendered),  # the shim's legacy codec
    ]


@pytest.mark.parametrize("index", range(4))
def test_marks_are_found_in_every_encoding(index: int) -> None:
    marks = parse_marks(encodings(123)[index])
    assert marks is not None
    assert marks[0] == 123
    assert abs(marks[1] - legacy_payload(1, 1, "")["sent_at"]) < 60


def test_other_frames_have_no_marks() -> None:
    assert parse_marks(b'{"type":"heartbeat","data":{}}') is None
    assert parse_marks(b"not json at all") is None


def test_padding_reaches_about_the_requested_size() -> None:
    assert abs(len(orjson.dumps(legacy_payload(100, 1, pad_for(300)))) - 300) < 10


def test_percentile_counts_missing_values_as_infinitely_late() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99, expected=102) == math.inf
    assert percentile(values, 50, expected=102) == 51.0
    assert math.isnan(percentile([], 50))


def test_summaries_skip_missing_and_keep_infinity() -> None:
    summary = summarize([3.0, None, 1.0, math.nan, 2.0])
    assert (summary.median, summary.low, summary.high, summary.n) == (2.0, 1.0, 3.0, 3)
    assert summarize([1.0, math.inf, math.inf]).median == math.inf
    assert summarize([]).n == 0
    assert ratio(2.0, 4.0) == 0.5
    assert math.isnan(ratio(1.0, 0.0))
