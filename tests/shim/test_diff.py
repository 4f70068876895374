"""Unit tests for shim.diff: data in, mismatches out, on a fake clock."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim.diff import (
    ABSENT,
    DiffConfig,
    Differ,
    ExpectedDifference,
    FieldDiff,
    Mismatch,
    MismatchKind,
    Side,
)

SETTLE = DiffConfig().settle_seconds


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ListLogger:
    """Stands in for structlog: keeps every ``warning(event, **fields)`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.calls.append((event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.calls if event == name]


_serial = iter(range(1_000_000))


def ev(
    type_: str = "training_progress", topic: str | None = "training", **data: Any
) -> dict[str, Any]:
    """A wire dict whose envelope noise (timestamp, seq, epoch, id) differs on every call."""
    n = next(_serial)
    wire: dict[str, Any] = {
        "type": type_,
        "data": data,
        "timestamp": f"2026-01-01T00:00:{n % 60:02d}.{n:06d}Z",
        "seq": n,
        "epoch": f"e{n}",
        "id": f"req-{n}",
    }
    if topic is not None:
        wire["topic"] = topic
    return wire


def make(
    config: DiffConfig | None = None, endpoint: str = "/ws/training", connection: str = "c1"
) -> tuple[Differ, FakeClock, ListLogger]:
    clock, logger = FakeClock(), ListLogger()
    differ = Differ(config, clock=clock, logger=logger)
    differ.open(connection, endpoint)
    return differ, clock, logger


def feed(differ: Differ, legacy: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    for event in legacy:
        differ.record("c1", Side.LEGACY, event)
    for event in new:
        differ.record("c1", Side.NEW, event)


def kinds(mismatches: list[Mismatch]) -> list[MismatchKind]:
    return [mismatch.kind for mismatch in mismatches]


# -- identical streams and masks ---------------------------------------------------------


def test_identical_streams_have_no_mismatch_and_count_every_event() -> None:
    differ, _, logger = make()
    events = [ev(session_id="s1", step=i, loss=1 / (i + 1)) for i in range(5)]
    # Same content, different timestamp/seq/epoch/id on each side.
    feed(
        differ,
        events,
        [{**e, "timestamp": "later", "seq": 99, "epoch": "x", "id": "y"} for e in events],
    )

    assert differ.flush(force=True) == []
    counts = differ.counters()["/ws/training"]
    assert counts["compared"] == 10
    assert counts["matched"] == 10
    assert differ.unexpected_total == 0
    assert logger.calls == []


def test_without_masks_the_envelope_noise_is_a_field_mismatch() -> None:
    differ, _, _ = make(DiffConfig(masks=()))
    legacy = ev(session_id="s1")
    new = {**legacy, "timestamp": "other", "seq": 7}

    feed(differ, [legacy], [new])
    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.FIELD
    assert [diff.path for diff in mismatch.fields] == ["seq", "timestamp"]


def test_nested_mask_path() -> None:
    differ, _, _ = make(DiffConfig(masks=("timestamp", "seq", "epoch", "id", "data.updated_at")))
    feed(
        differ,
        [ev(session_id="s1", updated_at="t1", state="a"), ev(session_id="s2", updated_at="t1")],
        [ev(session_id="s1", updated_at="t2", state="b"), ev(session_id="s2", updated_at="t3")],
    )

    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.FIELD
    assert mismatch.fields == (FieldDiff("data.state", "a", "b"),)
    assert mismatch.legacy is not None and mismatch.legacy["data"]["updated_at"] == "t1"


def test_wildcard_mask_over_dict_keys_and_list_items() -> None:
    masks = ("timestamp", "seq", "epoch", "id", "data.*.updated_at", "data.models.*.at")
    differ, _, _ = make(DiffConfig(masks=masks))
    legacy = ev(
        session_id="s1",
        a={"updated_at": 1, "x": 1},
        b={"updated_at": 2},
        models=[{"id": "m1", "at": 1}, {"id": "m2", "at": 2}],
    )
    new = ev(
        session_id="s1",
        a={"updated_at": 9, "x": 2},
        b={"updated_at": 9},
        models=[{"id": "m1", "at": 9}, {"id": "m2", "at": 9}],
    )

    feed(differ, [legacy], [new])
    [mismatch] = differ.flush(force=True)

    assert mismatch.fields == (FieldDiff("data.a.x", 1, 2),)


def test_masked_list_items_still_compare_list_length() -> None:
    differ, _, _ = make(DiffConfig(masks=("timestamp", "seq", "epoch", "id", "data.items.*")))
    feed(differ, [ev(session_id="s", items=[1, 2])], [ev(session_id="s", items=[3, 4, 5])])

    [mismatch] = differ.flush(force=True)

    assert [diff.path for diff in mismatch.fields] == ["data.items"]


def test_record_does_not_mutate_the_event() -> None:
    differ, _, _ = make()
    event = ev(session_id="s1")
    snapshot = json.dumps(event, sort_keys=True)

    differ.record("c1", Side.LEGACY, event)

    assert json.dumps(event, sort_keys=True) == snapshot


# -- missing, extra and settling ------------------------------------------------------------


def test_missing_is_reported_only_after_settle() -> None:
    differ, clock, _ = make()
    shared = ev(session_id="s1", step=1)
    lost = ev("model_created", "models", model_id="m1")
    feed(differ, [shared, lost], [shared])

    assert differ.flush() == []
    clock.advance(SETTLE - 0.01)
    assert differ.flush() == []

    clock.advance(0.02)
    [mismatch] = differ.flush()

    assert mismatch.kind is MismatchKind.MISSING
    assert mismatch.legacy is lost
    assert mismatch.new is None
    assert (mismatch.type, mismatch.topic) == ("model_created", "models")
    assert differ.flush(force=True) == []  # reported once
    counts = differ.counters()["/ws/training"]
    assert (counts["matched"], counts["missing"]) == (2, 1)


def test_extra_is_reported_after_settle() -> None:
    differ, clock, _ = make()
    extra = ev("system_status", "system", cpu=3)
    feed(differ, [], [extra])

    assert differ.flush() == []
    clock.advance(SETTLE)
    [mismatch] = differ.flush()

    assert (mismatch.kind, mismatch.legacy, mismatch.new) == (MismatchKind.EXTRA, None, extra)


def test_force_settles_everything_now() -> None:
    differ, _, _ = make()
    feed(differ, [ev("model_created", model_id="m1")], [ev("model_deleted", model_id="m1")])

    assert kinds(differ.flush(force=True)) == [MismatchKind.MISSING, MismatchKind.EXTRA]


def test_late_counterpart_within_settle_still_matches_in_order() -> None:
    differ, clock, _ = make()
    first, second = ev(session_id="s", step=1), ev(session_id="s", step=2)
    feed(differ, [first, second], [])
    assert differ.flush() == []

    clock.advance(SETTLE / 2)
    feed(differ, [], [first])
    assert differ.flush() == []
    clock.advance(SETTLE / 2 - 0.01)
    feed(differ, [], [second])

    assert differ.flush() == []
    clock.advance(10 * SETTLE)
    assert differ.flush() == []
    assert differ.counters()["/ws/training"]["matched"] == 4


def test_close_settles_returns_and_forgets() -> None:
    differ, _, _ = make()
    lost = ev(session_id="s1")
    feed(differ, [lost], [])

    [mismatch] = differ.close("c1")
    differ.record("c1", Side.NEW, lost)  # closed: ignored

    assert mismatch.kind is MismatchKind.MISSING
    assert differ.flush(force=True) == []
    assert differ.close("c1") == []
    assert differ.counters()["/ws/training"]["compared"] == 1


def test_unopened_connections_and_unknown_sides_are_ignored() -> None:
    differ, _, _ = make()
    differ.record("nobody", Side.LEGACY, ev())
    differ.record("c1", "sideways", ev())  # type: ignore[arg-type]

    assert differ.flush(force=True) == []
    assert differ.counters()["/ws/training"]["compared"] == 0


def test_string_sides_are_accepted() -> None:
    differ, _, _ = make()
    event = ev(session_id="s")
    differ.record("c1", "legacy", event)  # type: ignore[arg-type]
    differ.record("c1", "new", event)  # type: ignore[arg-type]

    assert differ.flush(force=True) == []
    assert differ.counters()["/ws/training"]["matched"] == 2


def test_odd_input_never_raises_and_is_compared() -> None:
    differ, _, _ = make()
    odd: list[Any] = [
        {"type": "custom", "data": "not a dict"},
        {"type": 7, "data": [1, {2, 3}], "topic": ("t",)},
        {"data": {"huge": 2**80, "nan": math.nan, "blob": b"\x00"}},
        "not even a mapping",
        {"type": "custom", "data": {1: "int key"}},
    ]
    for event in odd:
        differ.record("c1", Side.LEGACY, event)
        differ.record("c1", Side.NEW, event)
    differ.record("c1", Side.LEGACY, {"type": "custom", "data": {"huge": 2**80}})
    differ.record("c1", Side.NEW, {"type": "custom", "data": {"huge": 2**80 + 1}})

    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.FIELD
    assert mismatch.fields == (FieldDiff("data.huge", 2**80, 2**80 + 1),)
    assert differ.counters()["/ws/training"]["matched"] == 2 * len(odd)
    json.loads(differ.report().to_json())  # still serializable


def test_numbers_compare_as_json_does_not_conflate_bool_int_float() -> None:
    differ, _, _ = make()
    feed(
        differ,
        [ev(session_id="a", v=1), ev(session_id="b", v=1), ev(session_id="c", v=math.nan)],
        [ev(session_id="a", v=1.0), ev(session_id="b", v=True), ev(session_id="c", v=math.nan)],
    )

    mismatches = differ.flush(force=True)

    assert [m.fields[0].path for m in mismatches] == ["data.v", "data.v"]
    assert differ.counters()["/ws/training"]["matched"] == 2


# -- field mismatches ---------------------------------------------------------------------


def test_field_reports_exact_differing_paths() -> None:
    differ, _, _ = make()
    legacy = ev(
        session_id="s1",
        metrics={"loss": 0.1, "acc": 0.9},
        tags=["a", "b"],
        points=[{"x": 1}, {"x": 2}],
        gone=1,
    )
    new = ev(
        session_id="s1",
        metrics={"loss": 0.2, "acc": 0.9},
        tags=["a"],
        points=[{"x": 1}, {"x": 3}],
        added=2,
    )

    feed(differ, [legacy], [new])
    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.FIELD
    assert (mismatch.legacy, mismatch.new) == (legacy, new)
    assert mismatch.fields == (
        FieldDiff("data.added", ABSENT, 2),
        FieldDiff("data.gone", 1, ABSENT),
        FieldDiff("data.metrics.loss", 0.1, 0.2),
        FieldDiff("data.points.1.x", 2, 3),
        FieldDiff("data.tags", ["a", "b"], ["a"]),
    )
    assert mismatch.fields[0].to_dict() == {"path": "data.added", "new": 2}


def test_field_pairs_by_type_topic_and_correlation_keys_not_position() -> None:
    differ, _, _ = make()
    feed(
        differ,
        [ev(session_id="s1", v=1), ev(session_id="s2", v=1)],
        [ev(session_id="s2", v=2), ev(session_id="s1", v=2)],
    )

    mismatches = differ.flush(force=True)

    assert kinds(mismatches) == [MismatchKind.FIELD, MismatchKind.FIELD]
    for mismatch in mismatches:
        assert mismatch.legacy is not None and mismatch.new is not None
        assert mismatch.legacy["data"]["session_id"] == mismatch.new["data"]["session_id"]
        assert mismatch.fields == (FieldDiff("data.v", 1, 2),)


def test_different_type_or_topic_is_missing_plus_extra_not_field() -> None:
    differ, _, _ = make()
    feed(
        differ,
        [ev("training_started", session_id="s1"), ev(topic="a", session_id="s2")],
        [ev("training_failed", session_id="s1"), ev(topic="b", session_id="s2")],
    )

    found = kinds(differ.flush(force=True))

    assert sorted(found) == sorted([MismatchKind.MISSING] * 2 + [MismatchKind.EXTRA] * 2)


def test_young_unmatched_event_pairs_with_a_settled_one_as_field() -> None:
    differ, clock, _ = make()
    feed(differ, [ev(session_id="s1", v=1)], [])
    clock.advance(SETTLE - 0.1)
    feed(differ, [], [ev(session_id="s1", v=2)])  # slower side, still young
    clock.advance(0.2)

    assert kinds(differ.flush()) == [MismatchKind.FIELD]


# -- order ----------------------------------------------------------------------------------


def test_swapped_pair_is_one_order_mismatch_with_both_payloads() -> None:
    differ, _, _ = make()
    a, b = ev(session_id="s", step=1), ev(session_id="s", step=2)
    feed(differ, [a, b], [b, a])

    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.ORDER
    assert mismatch.legacy is not None and mismatch.new is not None
    assert mismatch.legacy["data"] == mismatch.new["data"]
    assert "position" in mismatch.reason
    counts = differ.counters()["/ws/training"]
    assert (counts["matched"], counts["order"]) == (2, 1)


def test_same_order_is_not_an_order_mismatch() -> None:
    differ, _, _ = make()
    a, b = ev(session_id="s", step=1), ev(session_id="s", step=2)
    feed(differ, [a, b], [a, b])

    assert differ.flush(force=True) == []


def test_one_moved_event_is_one_order_mismatch() -> None:
    differ, _, _ = make()
    events = [ev(session_id="s", step=i) for i in range(6)]
    feed(differ, events, events[1:] + events[:1])

    mismatches = differ.flush(force=True)

    assert kinds(mismatches) == [MismatchKind.ORDER]
    assert mismatches[0].legacy is not None and mismatches[0].legacy["data"]["step"] == 0


def test_order_detected_across_flushes() -> None:
    differ, clock, _ = make()
    a, b = ev(session_id="s", step=1), ev(session_id="s", step=2)
    feed(differ, [a, b], [b])
    assert differ.flush() == []
    clock.advance(SETTLE / 2)
    feed(differ, [], [a])
    clock.advance(SETTLE)

    assert kinds(differ.flush()) == [MismatchKind.ORDER]


def test_duplicates_are_aligned_so_a_dropped_copy_is_not_an_order_mismatch() -> None:
    differ, _, _ = make()
    a, b = ev(session_id="s", step=1), ev(session_id="s", step=2)
    # First-come matching of the new `a` with the legacy first `a` would invert it with `b`.
    feed(differ, [a, b, a], [b, a])

    assert kinds(differ.flush(force=True)) == [MismatchKind.MISSING]


# -- expected differences ---------------------------------------------------------------------


def test_declared_differences_are_counted_as_expected() -> None:
    config = DiffConfig(
        expected=(
            ExpectedDifference(MismatchKind.FIELD, field="data.eta", reason="eta now computed"),
            ExpectedDifference(MismatchKind.EXTRA, type="heartbeat", reason="new sends heartbeats"),
        )
    )
    differ, _, logger = make(config)
    feed(
        differ,
        [ev(session_id="s1", eta={"s": 10, "ms": 1}, step=1)],
        [ev(session_id="s1", eta={"s": 11, "ms": 2}, step=1), ev("heartbeat", None)],
    )

    mismatches = differ.flush(force=True)

    assert kinds(mismatches) == [MismatchKind.FIELD, MismatchKind.EXTRA]
    assert all(mismatch.expected for mismatch in mismatches)
    assert [m.reason for m in mismatches] == ["eta now computed", "new sends heartbeats"]
    counts = differ.counters()["/ws/training"]
    assert counts["expected"] == 2
    assert counts["field"] == counts["extra"] == 0
    assert differ.unexpected_total == 0
    assert differ.recent() == []
    assert differ.report().has_unexpected is False
    assert logger.calls == []


def test_expected_field_must_cover_every_differing_path() -> None:
    config = DiffConfig(expected=(ExpectedDifference(MismatchKind.FIELD, field="data.eta"),))
    differ, _, _ = make(config)
    feed(differ, [ev(session_id="s1", eta=1, step=1)], [ev(session_id="s1", eta=2, step=2)])

    [mismatch] = differ.flush(force=True)

    assert not mismatch.expected
    assert differ.report().has_unexpected is True
    assert differ.counters()["/ws/training"]["field"] == 1


def test_several_field_declarations_together_cover_a_mismatch() -> None:
    config = DiffConfig(
        expected=(
            ExpectedDifference(MismatchKind.FIELD, field="data.eta", reason="eta"),
            ExpectedDifference(MismatchKind.FIELD, field="data.*.unit", reason="units"),
        )
    )
    differ, _, _ = make(config)
    feed(
        differ,
        [ev(session_id="s1", eta=1, loss={"unit": "a"})],
        [ev(session_id="s1", eta=2, loss={"unit": "b"})],
    )

    [mismatch] = differ.flush(force=True)

    assert mismatch.expected
    assert mismatch.reason == "eta; units"


def test_expected_difference_matching_rules() -> None:
    mismatch = Mismatch(
        kind=MismatchKind.FIELD,
        connection="c",
        endpoint="/ws",
        type="training_progress",
        topic="training",
        legacy={},
        new={},
        fields=(FieldDiff("data.eta.s", 1, 2), FieldDiff("data.eta.ms", 1, 2)),
    )

    assert ExpectedDifference(MismatchKind.FIELD).matches(mismatch)
    assert ExpectedDifference(MismatchKind.FIELD, field="data.eta").matches(mismatch)
    assert ExpectedDifference(MismatchKind.FIELD, field="data.*", endpoint="/ws").matches(mismatch)
    assert not ExpectedDifference(MismatchKind.FIELD, field="data.eta.s").matches(mismatch)
    assert not ExpectedDifference(MismatchKind.FIELD, field="data.et").matches(mismatch)
    assert not ExpectedDifference(MismatchKind.MISSING).matches(mismatch)
    assert not ExpectedDifference(MismatchKind.FIELD, type="model_created").matches(mismatch)
    assert not ExpectedDifference(MismatchKind.FIELD, topic="models").matches(mismatch)
    assert not ExpectedDifference(MismatchKind.FIELD, endpoint="/other").matches(mismatch)
    with pytest.raises(ValueError, match="FIELD"):
        ExpectedDifference(MismatchKind.MISSING, field="data.x")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        DiffConfig(max_pending=0)
    with pytest.raises(ValueError, match="settle_seconds"):
        DiffConfig(settle_seconds=-1)
    with pytest.raises(ValueError, match="empty segment"):
        DiffConfig(masks=("data..x",))


# -- overflow ---------------------------------------------------------------------------------


def test_overflow_drops_oldest_and_reports_once() -> None:
    differ, _, _ = make(DiffConfig(max_pending=3))
    stuck = [ev(session_id="s", step=i) for i in range(6)]
    feed(differ, stuck, [])

    mismatches = differ.flush()

    assert kinds(mismatches) == [MismatchKind.OVERFLOW]
    assert mismatches[0].legacy is stuck[0]
    assert "max_pending=3" in mismatches[0].reason
    # The three newest are still pending and settle as missing.
    assert [m.legacy for m in differ.flush(force=True)] == stuck[3:]
    assert differ.counters()["/ws/training"]["overflow"] == 1


def test_sides_that_keep_up_never_overflow_even_without_flush() -> None:
    differ, _, _ = make(DiffConfig(max_pending=10))
    for step in range(500):
        event = ev(session_id="s", step=step)
        differ.record("c1", Side.LEGACY, event)
        differ.record("c1", Side.NEW, event)

    assert differ.flush(force=True) == []
    assert differ.counters()["/ws/training"]["matched"] == 1000


# -- counters, ring, report ---------------------------------------------------------------------


def test_counters_are_per_endpoint() -> None:
    clock = FakeClock()
    differ = Differ(clock=clock, logger=ListLogger())
    differ.open("a1", "/ws/a")
    differ.open("a2", "/ws/a")
    differ.open("b1", "/ws/b")
    shared = ev(session_id="s")
    for connection in ("a1", "a2", "b1"):
        differ.record(connection, Side.LEGACY, shared)
    differ.record("a1", Side.NEW, shared)
    differ.record("b1", Side.NEW, ev("model_created", model_id="m"))

    differ.flush(force=True)

    counters = differ.counters()
    assert counters["/ws/a"] == {
        "compared": 3,
        "matched": 2,
        "missing": 1,
        "extra": 0,
        "field": 0,
        "order": 0,
        "overflow": 0,
        "expected": 0,
    }
    assert (counters["/ws/b"]["missing"], counters["/ws/b"]["extra"]) == (1, 1)
    assert differ.unexpected_total == 3


def test_ring_keeps_the_last_ring_size_mismatches() -> None:
    differ, _, _ = make(DiffConfig(ring_size=3))
    feed(differ, [ev(session_id=f"s{i}", n=i) for i in range(5)], [])
    differ.flush(force=True)

    def numbers(mismatches: list[Mismatch]) -> list[int]:
        return [m.legacy["data"]["n"] for m in mismatches if m.legacy is not None]

    assert numbers(differ.recent()) == [2, 3, 4]
    assert numbers(differ.recent(limit=2)) == [3, 4]
    assert differ.recent(limit=0) == []
    assert numbers(differ.report().mismatches) == [2, 3, 4]
    assert differ.counters()["/ws/training"]["missing"] == 5


def test_report_json_round_trips() -> None:
    differ, _, _ = make()
    feed(differ, [ev(session_id="s1", v=1, gone=True)], [ev(session_id="s1", v=2)])
    differ.flush(force=True)

    report = differ.report()
    loaded = json.loads(report.to_json())

    assert loaded["counters"] == differ.counters()
    assert loaded["unexpected_total"] == 1
    [mismatch] = loaded["mismatches"]
    assert mismatch["kind"] == "field"
    assert mismatch["fields"] == [
        {"path": "data.gone", "legacy": True},
        {"path": "data.v", "legacy": 1, "new": 2},
    ]
    assert mismatch["legacy"]["data"]["v"] == 1
    assert mismatch["new"]["data"]["v"] == 2
    assert report.has_unexpected


def test_report_markdown_has_summary_table_and_both_payloads() -> None:
    differ, _, _ = make()
    feed(differ, [ev(session_id="s1", loss=0.125)], [ev(session_id="s1", loss=0.25)])
    feed(differ, [ev("model_created", "models", model_id="m|1")], [])
    differ.flush(force=True)

    markdown = differ.report().to_markdown()

    assert "| endpoint | compared | matched | missing | extra | field | order | overflow |" in (
        markdown
    )
    assert "| `/ws/training` | 3 | 0 | 1 | 0 | 1 | 0 | 0 | 0 |" in markdown
    assert '"loss": 0.125' in markdown
    assert '"loss": 0.25' in markdown
    assert "| `data.loss` | `0.125` | `0.25` |" in markdown
    assert "**new**: not delivered" in markdown
    assert "m|1" in markdown  # payloads are verbatim inside code blocks


def test_empty_report() -> None:
    differ = Differ(clock=FakeClock(), logger=ListLogger())
    report = differ.report()

    assert not report.has_unexpected
    assert "No unexpected mismatch" in report.to_markdown()
    assert json.loads(report.to_json())["mismatches"] == []


# -- logging -----------------------------------------------------------------------------------


def test_logging_is_rate_limited_and_suppression_is_counted() -> None:
    differ, clock, logger = make(DiffConfig(log_per_second=3))
    feed(differ, [ev(session_id=f"s{i}") for i in range(10)], [])
    differ.flush(force=True)

    assert len(logger.events("diff_mismatch")) == 3
    assert logger.events("diff_mismatches_suppressed") == [{"count": 7}]
    assert logger.events("diff_mismatch")[0]["kind"] == "missing"

    clock.advance(0.5)  # refills 1.5 tokens
    feed(differ, [ev(session_id=f"t{i}") for i in range(4)], [])
    differ.flush(force=True)

    assert len(logger.events("diff_mismatch")) == 4
    assert logger.events("diff_mismatches_suppressed")[-1] == {"count": 3}

    clock.advance(1.0)
    feed(differ, [ev(session_id=f"u{i}") for i in range(2)], [])
    differ.flush(force=True)
    assert len(logger.events("diff_mismatch")) == 6
    assert len(logger.events("diff_mismatches_suppressed")) == 2
    assert differ.counters()["/ws/training"]["missing"] == 16


def test_zero_log_rate_turns_logging_off() -> None:
    differ, _, logger = make(DiffConfig(log_per_second=0))
    feed(differ, [ev(session_id="s")], [])
    differ.flush(force=True)

    assert logger.calls == []
    assert differ.counters()["/ws/training"]["missing"] == 1


def test_record_never_logs() -> None:
    differ, _, logger = make(DiffConfig(max_pending=1))
    feed(differ, [ev(session_id="s", n=i) for i in range(5)], [])

    assert logger.calls == []


# -- properties ---------------------------------------------------------------------------------

event_content = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["training_progress", "model_updated", "custom"]),
        "topic": st.sampled_from(["training", "models"]),
        "data": st.fixed_dictionaries(
            {"session_id": st.sampled_from(["s1", "s2"]), "v": st.integers(0, 2)}
        ),
    }
)


def noisy(content: dict[str, Any], seq: int) -> dict[str, Any]:
    """``content`` as one side would deliver it: its own timestamp and seq."""
    return {**content, "timestamp": f"t{seq}", "seq": seq}


@settings(max_examples=200, deadline=None)
@given(st.data(), st.lists(event_content, max_size=12))
def test_same_events_in_any_interleaving_have_no_mismatch(
    data: st.DataObject, contents: list[dict[str, Any]]
) -> None:
    differ, _, _ = make()
    n = len(contents)
    steps = data.draw(st.permutations(["legacy"] * n + ["new"] * n + ["flush"] * 3))
    cursor = {"legacy": 0, "new": 0}
    for step in steps:
        if step == "flush":
            assert differ.flush() == []
            continue
        side = Side(step)
        differ.record("c1", side, noisy(contents[cursor[step]], 100 * cursor[step] + len(step)))
        cursor[step] += 1

    assert differ.flush(force=True) == []
    counts = differ.counters()["/ws/training"]
    assert counts["matched"] == counts["compared"] == 2 * n


@settings(max_examples=200, deadline=None)
@given(st.data(), st.lists(event_content, min_size=1, max_size=12))
def test_one_event_less_is_exactly_one_missing(
    data: st.DataObject, contents: list[dict[str, Any]]
) -> None:
    differ, _, _ = make()
    removed = data.draw(st.integers(0, len(contents) - 1))
    feed(
        differ,
        [noisy(c, i) for i, c in enumerate(contents)],
        [noisy(c, 1000 + i) for i, c in enumerate(contents) if i != removed],
    )

    [mismatch] = differ.flush(force=True)

    assert mismatch.kind is MismatchKind.MISSING
    assert mismatch.legacy is not None
    assert mismatch.legacy["data"] == contents[removed]["data"]


def lcs_length(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            if a[i] == b[j]:
                table[i][j] = table[i + 1][j + 1] + 1
            else:
                table[i][j] = max(table[i + 1][j], table[i][j + 1])
    return table[0][0]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=14), st.lists(st.sampled_from("abcd"), max_size=14)
)
def test_matched_events_are_a_longest_common_subsequence(left: list[str], right: list[str]) -> None:
    differ, _, _ = make()
    feed(
        differ,
        [ev("custom", None, v=v) for v in left],
        [ev("custom", None, v=v) for v in right],
    )

    mismatches = differ.flush(force=True)

    counts = differ.counters()["/ws/training"]
    assert counts["matched"] == 2 * lcs_length(left, right)
    # Every event is accounted for exactly once.
    events_in = {MismatchKind.MISSING: 1, MismatchKind.EXTRA: 1}
    accounted = sum(events_in.get(m.kind, 2) for m in mismatches)
    assert counts["matched"] + accounted == counts["compared"] == len(left) + len(right)
