"""Unit tests for shim.translate: legacy payloads <-> standardized messages, data in, data out."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy.catalogue import CATALOGUE, CatalogueEntry, entry
from service.messages import MessageType, WebSocketMessage, encode
from shim.rules import default_rules
from shim.translate import (
    EXTRA_KEY,
    OMITTED_KEY,
    FieldMap,
    TranslationError,
    TranslationRule,
    Translator,
)
from tests.legacy.strategies import (
    json_values,
    legacy_samples,
    unknown_payloads,
    vocabulary_payloads,
)

T = MessageType
TS = entry("training_update").payload["timestamp"]
NOW = "2030-01-01T00:00:00+00:00"


def fixed_clock() -> str:
    return NOW


@pytest.fixture
def translator() -> Translator:
    return Translator(clock=fixed_clock)


#: What every catalogued shape becomes: (type, topic, data). This is the contract
#: front-end teams read; a change here is a change of the standardized schema.
EXPECTED: dict[str, tuple[MessageType, str, dict[str, Any]]] = {
    "training_update": (
        T.TRAINING_PROGRESS,
        "training",
        {
            "phase_name": "Cognate",
            "progress": 0.35,
            "message": "Training model 2/3: epoch 4",
            "status": "running",
        },
    ),
    "training_started": (
        T.TRAINING_STARTED,
        "training",
        {
            "session_id": "task-7f3c2a",
            "parameters": {
                "epochs_per_phase": 6,
                "learning_rate": 0.0003,
                "base_models": ["qwen-1.5b"],
            },
            "phase_name": "Cognate",
            "message": "Training started",
        },
    ),
    "training_complete": (
        T.TRAINING_COMPLETED,
        "training",
        {
            "session_id": "task-7f3c2a",
            "message": "Training completed successfully",
            "metrics": {"loss": 0.4182, "accuracy": 0.913},
        },
    ),
    "training_error": (
        T.TRAINING_FAILED,
        "training",
        {"session_id": "task-7f3c2a", "phase_name": "EvoMerge", "error": "CUDA out of memory"},
    ),
    "phase_change": (
        T.PHASE_UPDATE,
        "training",
        {"phase_name": "EvoMerge", "previous_phase": "Cognate", "status": "started"},
    ),
    "phase_complete": (
        T.PHASE_UPDATE,
        "training",
        {
            "phase_name": "Cognate",
            "status": "completed",
            "models_completed": 3,
            "total_models": 3,
            "duration_seconds": 412.5,
        },
    ),
    "model_created": (
        T.MODEL_CREATED,
        "models",
        {
            "model_id": "cognate-model-1",
            "model_info": {
                "name": "Cognate Foundation 1",
                "parameter_count": 25_083_528,
                "phase_name": "Cognate",
            },
        },
    ),
    "model_updated": (
        T.MODEL_UPDATED,
        "models",
        {"model_id": "cognate-model-1", "changes": {"status": "evaluated", "score": 0.87}},
    ),
    "status": (
        T.SYSTEM_STATUS,
        "system",
        {"status": "ready", "message": "Agent Forge backend ready", "active_phases": ["Cognate"]},
    ),
    "nested_update": (
        T.PHASE_UPDATE,
        "training",
        {"phase_name": "EvoMerge", "progress": 0.42, "message": "merging generation 21/50"},
    ),
    "bare_progress": (
        T.TRAINING_PROGRESS,
        "training",
        {"progress": 0.3, "session_id": "task-7f3c2a", "legacy_shape": "bare_progress"},
    ),
}


def through_json(message: WebSocketMessage) -> dict[str, Any]:
    """The wire dict a client (or the service's codec) sees: encoded, seq added, parsed."""
    wire: dict[str, Any] = orjson.loads(encode(message))
    return wire | {"seq": 7, "epoch": "e1"}


# -- the catalogue ------------------------------------------------------------------------


def test_default_rules_cover_the_catalogue_one_to_one() -> None:
    assert [r.name for r in default_rules()] != []
    assert {r.name for r in default_rules()} == {e.name for e in CATALOGUE} == set(EXPECTED)


@pytest.mark.parametrize("item", CATALOGUE, ids=lambda e: e.name)
def test_catalogue_entry_translates_and_comes_back(
    item: CatalogueEntry, translator: Translator
) -> None:
    original = item.fresh()
    translation = translator.to_standard(item.payload)
    message_type, topic, data = EXPECTED[item.name]
    assert translation.rule == item.name
    assert not translation.untranslated
    assert (translation.message.type, translation.message.topic, translation.topic) == (
        message_type,
        topic,
        topic,
    )
    assert translation.message.data == data
    assert translation.message.timestamp == item.payload.get("timestamp", NOW)
    assert item.payload == original  # not mutated
    assert translator.to_legacy(translation.message) == item.payload
    assert translator.to_legacy(translation.message.to_wire()) == item.payload
    assert translator.to_legacy(through_json(translation.message)) == item.payload


def test_stats_count_per_rule(translator: Translator) -> None:
    for item in CATALOGUE:
        translator.to_standard(item.payload)
    translator.to_standard(entry("status").payload)
    stats = translator.stats()
    assert stats["rules"] == {item.name: 1 for item in CATALOGUE} | {"status": 2}
    assert (stats["untranslated"], stats["errors"], stats["collisions"]) == (0, 0, 0)


# -- round trip properties ------------------------------------------------------------------


@settings(max_examples=300)
@given(legacy_samples())
def test_every_catalogued_shape_round_trips(sample: tuple[str, dict[str, Any]]) -> None:
    name, payload = sample
    original = copy.deepcopy(payload)
    translator = Translator()
    translation = translator.to_standard(payload)
    assert translation.rule == name
    assert translation.message.type is EXPECTED[name][0]
    assert translator.to_legacy(translation.message) == original
    assert translator.to_legacy(through_json(translation.message)) == original
    assert payload == original
    assert translator.stats()["collisions"] == 0


@settings(max_examples=100)
@given(unknown_payloads())
def test_unknown_dicts_become_custom_and_come_back(payload: dict[str, Any]) -> None:
    translator = Translator(untranslated_topic="legacy.misc")
    translation = translator.to_standard(payload)
    assert translation.untranslated and translation.rule is None
    assert translation.message.type is T.CUSTOM
    assert translation.message.topic == "legacy.misc"
    assert translation.message.data == {"legacy": payload}
    assert translator.to_legacy(translation.message) == payload
    assert translator.to_legacy(through_json(translation.message)) == payload
    assert translator.stats()["untranslated"] == 1


@settings(max_examples=300)
@given(vocabulary_payloads())
def test_any_dict_round_trips_whichever_rule_takes_it(payload: dict[str, Any]) -> None:
    translator = Translator()
    translation = translator.to_standard(payload)
    assert translator.to_legacy(translation.message) == payload
    assert translator.to_legacy(through_json(translation.message)) == payload


# -- what the standardized side looks like for odd payloads -------------------------------


def test_unknown_legacy_fields_keep_their_names_in_data(translator: Translator) -> None:
    payload = entry("training_update").fresh() | {"models_completed": 2, "total_models": 3}
    data = translator.to_standard(payload).message.data
    assert data["models_completed"] == 2 and data["total_models"] == 3
    assert EXTRA_KEY not in data


def test_fields_that_would_mean_something_else_go_under_extra(translator: Translator) -> None:
    payload = entry("training_started").fresh() | {"session_id": "other", "extra": 1, "status": "x"}
    data = translator.to_standard(payload).message.data
    assert data["session_id"] == "task-7f3c2a"  # from task_id, not the stray field
    assert data[EXTRA_KEY] == {"session_id": "other", "extra": 1}
    assert data["status"] == "x"
    assert translator.to_legacy(translator.to_standard(payload).message) == payload


def test_a_field_that_selects_a_rule_is_escaped(translator: Translator) -> None:
    payload = {"type": "update", "status": "started", "payload": {"phase": "A"}}
    message = translator.to_standard(payload).message
    assert message.data == {"phase_name": "A", EXTRA_KEY: {"status": "started"}}
    assert translator.to_legacy(message) == payload  # still an update, not a phase_change


def test_missing_timestamp_and_constants_are_recorded_not_invented(
    translator: Translator,
) -> None:
    payload = {"type": "training_complete", "session_id": "s"}
    message = translator.to_standard(payload).message
    assert message.timestamp == NOW
    assert message.data == {"session_id": "s", OMITTED_KEY: ["status", "timestamp"]}
    assert translator.to_legacy(message) == payload


def test_differing_constant_and_odd_timestamp_survive(translator: Translator) -> None:
    payload = {"type": "training_complete", "status": "partial", "timestamp": 1715682727.5}
    message = translator.to_standard(payload).message
    assert message.timestamp == NOW
    assert message.data == {"status": "partial", "timestamp": 1715682727.5}
    assert translator.to_legacy(message) == payload


def test_empty_nested_container_is_kept(translator: Translator) -> None:
    payload = {"type": "update", "payload": {}}
    assert translator.to_legacy(translator.to_standard(payload).message) == payload
    payload = {"type": "update", "payload": {"phase": "A", "note": 1}}
    message = translator.to_standard(payload).message
    assert message.data == {"phase_name": "A", "payload": {"note": 1}}
    assert translator.to_legacy(message) == payload


def test_values_of_another_type_are_not_constants(translator: Translator) -> None:
    for odd in (1, 1.0, True, None):
        payload = {"type": "training_error", "status": odd}
        assert translator.to_legacy(translator.to_standard(payload).message) == payload


def test_constants_compare_by_type_too() -> None:
    rule = _rule(constants={"version": 1})
    translator = Translator(rules=[rule])
    for odd in (True, 1.0):
        payload = {"type": "r", "version": odd}
        back = translator.to_legacy(translator.to_standard(payload).message)
        assert back == payload
        assert type(back["version"]) is type(odd)


def test_an_empty_dict_next_to_a_nested_data_path_is_kept(translator: Translator) -> None:
    payload = {"type": "model_created", "model_name": "n", "model_info": {}, "timestamp": TS}
    message = translator.to_standard(payload).message
    assert message.data == {"model_info": {"name": "n"}, EXTRA_KEY: {"model_info": {}}}
    assert translator.to_legacy(message) == payload


def test_untranslated_uses_a_string_timestamp_from_the_payload(translator: Translator) -> None:
    assert translator.to_standard({"kind": "x", "timestamp": TS}).message.timestamp == TS
    assert translator.to_standard({"kind": "x", "timestamp": 5}).message.timestamp == NOW


def test_a_typed_payload_with_progress_is_not_bare_progress(translator: Translator) -> None:
    translation = translator.to_standard({"type": "epoch_end", "progress": 0.5})
    assert translation.untranslated
    translation = translator.to_standard({"event": "tick", "progress": 0.5})
    assert translation.untranslated
    assert translator.to_standard({"progress": 0.5}).rule == "bare_progress"
    assert translator.to_standard({"type": ["training_update"]}).untranslated


def test_unknown_shapes_are_counted(translator: Translator) -> None:
    translator.to_standard({"kind": "heartbeat"})
    translator.to_standard({"type": "mystery", "x": 1})
    translator.to_standard(entry("training_update").payload)
    stats = translator.stats()
    assert stats["untranslated"] == 2
    assert stats["rules"]["training_update"] == 1


def test_untranslated_topic_is_configurable_and_listed_last() -> None:
    translator = Translator(untranslated_topic="legacy-misc")
    assert translator.untranslated_topic == "legacy-misc"
    assert translator.to_standard({"kind": "x"}).message.topic == "legacy-misc"
    assert translator.topics() == ("training", "models", "system", "legacy-misc")
    assert Translator().topics()[-1] == "custom"
    with pytest.raises(ValueError):
        Translator(untranslated_topic="$all")


# -- standardized -> legacy -----------------------------------------------------------------


def test_guide_step_3_progress_maps_to_a_training_update(translator: Translator) -> None:
    message = WebSocketMessage(
        type=T.TRAINING_PROGRESS,
        data={
            "session_id": "sess-1",
            "progress": 0.5,
            "current_epoch": 3,
            "loss": 0.42,
            "metrics": {"accuracy": 0.91},
        },
        timestamp="2024-05-14T10:40:00",
    )
    assert translator.to_legacy(message) == {
        "type": "training_update",
        "session_id": "sess-1",
        "progress": 0.5,
        "current_epoch": 3,
        "loss": 0.42,
        "metrics": {"accuracy": 0.91},
        "timestamp": "2024-05-14T10:40:00",
    }


@pytest.mark.parametrize(
    ("message_type", "data", "legacy_type"),
    [
        (
            T.TRAINING_PROGRESS,
            {
                "session_id": "s",
                "progress": 0.25,
                "current_epoch": 2,
                "loss": 1.5,
                "metrics": {"accuracy": 0.5},
                "estimated_time_remaining": 12.0,
                "phase_name": "EvoMerge",
            },
            "training_update",
        ),
        (T.TRAINING_STARTED, {"session_id": "s", "parameters": {"lr": 0.1}}, "training_started"),
        (T.TRAINING_COMPLETED, {"session_id": "s", "metrics": {}}, "training_complete"),
        (T.TRAINING_FAILED, {"session_id": "s", "error": "oom"}, "training_error"),
        (T.PHASE_UPDATE, {"phase_name": "B", "status": "started"}, "phase_change"),
        (T.PHASE_UPDATE, {"phase_name": "B", "status": "completed"}, "phase_complete"),
        (T.PHASE_UPDATE, {"phase_name": "B", "progress": 0.5}, "update"),
        (
            T.MODEL_CREATED,
            {"model_id": "m", "model_info": {"name": "n", "architecture": "moe"}},
            "model_created",
        ),
        (T.MODEL_UPDATED, {"model_id": "m", "changes": {"a": 1}, "by": "ci"}, "model_updated"),
        (T.SYSTEM_STATUS, {"status": "ok", "gpu_count": 2}, "status"),
    ],
)
def test_new_style_messages_come_back_from_their_legacy_shape(
    message_type: MessageType, data: dict[str, Any], legacy_type: str, translator: Translator
) -> None:
    message = WebSocketMessage(type=message_type, data=data, timestamp=TS)
    legacy = translator.to_legacy(message)
    assert legacy is not None
    assert legacy.get("type", legacy.get("event")) == legacy_type
    again = translator.to_standard(legacy).message
    assert (again.type, again.data) == (message_type, data)
    # The nested ``update`` is the one legacy shape without a timestamp.
    assert (again.timestamp == TS) == (legacy_type != "update")
    assert translator.stats()["collisions"] == 0


def test_model_created_from_the_guide_renders_old_fields(translator: Translator) -> None:
    message = WebSocketMessage(
        type=T.MODEL_CREATED,
        data={"model_id": "m1", "model_info": {"name": "Cognate 1", "parameter_count": 25}},
        timestamp=TS,
    )
    assert translator.to_legacy(message) == {
        "type": "model_created",
        "model_id": "m1",
        "model_name": "Cognate 1",
        "parameters": 25,
        "timestamp": TS,
    }


_NEW_KEYS = st.text(min_size=1, max_size=8).filter(
    lambda k: k not in {"type", "timestamp", "status", "extra", "omitted", "legacy_shape"}
)


@settings(max_examples=100)
@given(
    st.dictionaries(_NEW_KEYS, json_values, max_size=5),
    st.sampled_from(["session_id", "progress", "loss", "metrics", "current_epoch"]),
)
def test_new_style_progress_with_any_extra_keys_comes_back(
    extra: dict[str, Any], known: str
) -> None:
    translator = Translator()
    data = {known: 0.5} | extra
    message = WebSocketMessage(type=T.TRAINING_PROGRESS, data=data, timestamp=TS)
    legacy = translator.to_legacy(message)
    assert legacy is not None
    assert translator.to_standard(legacy).message.data == data


def test_a_key_clashing_with_a_legacy_field_is_dropped_and_counted(
    translator: Translator,
) -> None:
    message = WebSocketMessage(
        type=T.TRAINING_STARTED, data={"session_id": "a", "task_id": "b"}, timestamp=TS
    )
    legacy = translator.to_legacy(message)
    assert legacy == {"type": "training_started", "task_id": "a", "timestamp": TS}
    assert translator.stats()["collisions"] == 1
    message = WebSocketMessage(type=T.TRAINING_FAILED, data={"error": "e", "type": "oom"})
    legacy = translator.to_legacy(message)
    assert legacy is not None and legacy["type"] == "training_error"
    assert translator.stats()["collisions"] == 2


@pytest.mark.parametrize(
    "message",
    [
        WebSocketMessage(type=T.PONG, id="3"),
        WebSocketMessage(type=T.HEARTBEAT),
        WebSocketMessage(type=T.CONNECTION_ESTABLISHED, data={"connection_id": "c"}),
        WebSocketMessage(type=T.ERROR, data={"code": "invalid_json", "message": "x"}),
        WebSocketMessage(type=T.MODEL_DELETED, data={"model_id": "m"}),
        WebSocketMessage(type=T.CUSTOM, data={"text": "hello"}),
        WebSocketMessage(type=T.CUSTOM, data={"legacy": [1, 2]}),
    ],
    ids=lambda m: f"{m.type.value}",
)
def test_messages_without_a_legacy_counterpart(
    message: WebSocketMessage, translator: Translator
) -> None:
    assert translator.to_legacy(message) is None
    assert translator.to_legacy(through_json(message)) is None


def test_custom_wrapping_a_legacy_payload_is_unwrapped(translator: Translator) -> None:
    original = {"kind": "x", "n": [1, 2]}
    message = WebSocketMessage(type=T.CUSTOM, data={"legacy": original})
    assert translator.to_legacy(message) == original


@pytest.mark.parametrize(
    "wire",
    [
        {"type": "Not A Type", "data": {}},
        {"data": {}},
        {"type": 5},
        {"type": "training_progress", "data": [1]},
        [("type", "pong")],
        "pong",
    ],
)
def test_malformed_wire_raises_translation_error(wire: Any, translator: Translator) -> None:
    with pytest.raises(TranslationError) as info:
        translator.to_legacy(wire)
    assert info.value.rule is None
    assert info.value.reason
    assert translator.stats()["errors"] == 1


# -- errors ---------------------------------------------------------------------------------


def _boom(value: Any) -> Any:
    raise ZeroDivisionError("division by zero in converter")


BROKEN = TranslationRule(
    "broken",
    T.TRAINING_PROGRESS,
    "training",
    discriminator=("type", "broken_progress"),
    fields=(FieldMap("pct", "progress", forward=_boom, backward=_boom),),
    data_constants={"legacy_shape": "broken"},
)


def test_a_rule_that_raises_gives_translation_error_with_its_name() -> None:
    translator = Translator(rules=[*default_rules(), BROKEN])
    with pytest.raises(TranslationError) as info:
        translator.to_standard({"type": "broken_progress", "pct": 50})
    assert info.value.rule == "broken"
    assert "ZeroDivisionError" in info.value.reason
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "broken" in str(info.value)
    stats = translator.stats()
    assert (stats["errors"], stats["rules"]["broken"], stats["untranslated"]) == (1, 0, 0)


def test_a_rule_that_raises_backwards_gives_translation_error() -> None:
    translator = Translator(rules=[*default_rules(), BROKEN])
    message = WebSocketMessage(
        type=T.TRAINING_PROGRESS, data={"progress": 1, "legacy_shape": "broken"}
    )
    with pytest.raises(TranslationError) as info:
        translator.to_legacy(message)
    assert info.value.rule == "broken"
    assert translator.stats()["errors"] == 1
    # the other rules are unaffected
    assert translator.to_standard(entry("training_update").payload).rule == "training_update"


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "training_update", "progress": object()},
        {"kind": "x", "tags": {"a", "b"}},
        {"type": "status", "status": b"ready"},
        {"n": 2**70},
    ],
    ids=["object", "set", "bytes", "big-int"],
)
def test_non_json_payload_raises_translation_error(
    payload: dict[str, Any], translator: Translator
) -> None:
    with pytest.raises(TranslationError) as info:
        translator.to_standard(payload)
    assert info.value.rule is None
    assert "JSON" in info.value.reason
    assert translator.stats()["errors"] == 1


@pytest.mark.parametrize("payload", [["type", "status"], "training_update", 3, 2.5, True, []])
def test_non_dict_payload_becomes_custom_value_and_round_trips(
    payload: Any, translator: Translator
) -> None:
    translation = translator.to_standard(payload)
    assert translation.untranslated
    assert translation.message.type is T.CUSTOM
    assert translation.message.data == {"value": payload}
    assert translator.to_legacy(translation.message) == payload
    assert translator.to_legacy(translation.message.to_wire()) == payload
    assert translator.stats()["untranslated"] == 1
    assert translator.round_trip_problem(payload) is None


def test_raw_text_becomes_custom_text_and_renders_back_as_the_same_frame(
    translator: Translator,
) -> None:
    translation = translator.text_to_standard("job 7: done <ok>")
    assert translation.message.data == {"text": "job 7: done <ok>"}
    assert translator.to_legacy_text(translation.message) == "job 7: done <ok>"
    assert translator.to_legacy_text(translator.to_standard([1, "é"]).message) == '[1,"é"]'


def _job_rule(**overrides: Any) -> TranslationRule:
    spec: dict[str, Any] = {
        "name": "job_progress",
        "message_type": "job_progress",
        "topic": "jobs",
        "discriminator": ("event", "progress"),
        "fields": (("job.id", "job_id"), "pct"),
        "timestamp_field": "timing.updated_at",
        "sample": {
            "event": "progress",
            "job": {"id": "j1"},
            "pct": 0.1,
            "timing": {"updated_at": "2026-01-01T00:00:00Z"},
        },
    }
    spec.update(overrides)
    return TranslationRule(**spec)


def test_app_defined_type_and_dotted_timestamp_translate_both_ways() -> None:
    translator = Translator(rules=[_job_rule()])
    sample = dict(_job_rule().sample or {})
    message = translator.to_standard(sample).message
    assert message.to_wire()["type"] == "job_progress"
    assert message.timestamp == "2026-01-01T00:00:00Z"
    assert message.data == {"job_id": "j1", "pct": 0.1}
    assert translator.to_legacy(message) == sample


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"message_type": "Job Done"}, "invalid message type"),
        ({"message_type": "pong"}, "not a domain event type"),
        ({"fields": ("job.name",)}, "'job.name' does not exist in the sample"),
        ({"timestamp_field": "timing.created"}, "'timing.created' does not exist"),
        ({"discriminator": ("event", "done")}, "does not match the discriminator"),
    ],
)
def test_a_bad_rule_fails_when_built_naming_the_rule(
    overrides: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match="job_progress") as info:
        _job_rule(**overrides)
    assert complaint in str(info.value)


def test_a_lossy_rule_fails_its_sample_round_trip_naming_rule_and_path() -> None:
    lossy = _job_rule(fields=(("job.id", "job_id"), FieldMap("pct", "pct", forward=round)))
    with pytest.raises(ValueError) as info:
        Translator(rules=[lossy])
    assert "'job_progress'" in str(info.value)
    assert "'pct'" in str(info.value)
    no_sample = Translator(rules=[_job_rule(fields=lossy.fields, sample=None)])
    problem = no_sample.round_trip_problem(dict(_job_rule().sample or {}))
    assert problem is not None and "'pct': 0.1 came back as 0" in problem


# -- rule definitions -----------------------------------------------------------------------


def _rule(**overrides: Any) -> TranslationRule:
    spec: dict[str, Any] = {
        "name": "r",
        "message_type": T.MODEL_UPDATED,
        "topic": "models",
        "discriminator": ("type", "r"),
    }
    return TranslationRule(**(spec | overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"topic": "bad topic"},
        {"message_type": T.PONG},
        {"message_type": T.CUSTOM},
        {"requires": ("x",)},  # both a discriminator and requires
        {"discriminator": None},  # neither
        {"fields": ("a", ("a.b", "c"))},  # overlapping legacy paths
        {"fields": (("a", "x"), ("b", "x.y"))},  # overlapping data paths
        {"fields": ("a..b",)},
        {"fields": ("timestamp",)},
        {"fields": ("type",)},
        {"fields": (("a", "extra"),)},
        {"fields": (("a", "omitted.x"),)},
        {"fields": ("kind",), "data_constants": {"kind": "x"}},
        {"data_constants": {"extra": 1}},
        {"constants": {"type": "other"}},
        {"constants": {"level": ["a"]}},
        {"constants": {"timestamp": "t"}},
    ],
)
def test_contradictory_rules_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="translation rule"):
        _rule(**overrides)


def test_rule_sets_that_cannot_be_told_apart_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        Translator(rules=[_rule(), _rule(discriminator=("type", "s"))])
    with pytest.raises(ValueError, match="both match"):
        Translator(rules=[_rule(), _rule(name="s")])
    with pytest.raises(ValueError, match="distinct data_constants"):
        Translator(rules=[_rule(), _rule(name="s", discriminator=("type", "s"))])
    with pytest.raises(ValueError, match="select other rules"):
        Translator(
            rules=[
                _rule(fields=("status",)),
                _rule(name="s", discriminator=("type", "s"), data_constants={"status": "x"}),
            ]
        )


def test_a_new_shape_is_a_few_lines() -> None:
    rule = TranslationRule(
        "epoch_end",
        T.TRAINING_PROGRESS,
        "training",
        discriminator=("kind", "epoch_end"),
        fields=(("run", "session_id"), ("stats.epoch", "current_epoch"), ("stats.loss", "loss")),
        data_constants={"legacy_shape": "epoch_end"},
        timestamp_field="at",
    )
    translator = Translator(rules=[*default_rules(), rule])
    payload = {"kind": "epoch_end", "run": "r1", "stats": {"epoch": 3, "loss": 0.5}, "at": TS}
    translation = translator.to_standard(payload)
    assert translation.rule == "epoch_end"
    assert translation.message.data == {
        "session_id": "r1",
        "current_epoch": 3,
        "loss": 0.5,
        "legacy_shape": "epoch_end",
    }
    assert translation.message.timestamp == TS
    assert translator.to_legacy(translation.message) == payload


def test_without_a_sample_old_payloads_come_back_in_the_apps_key_order() -> None:
    rule = TranslationRule(
        "job_state",
        "job_state",
        "jobs",
        discriminator=("kind", "state"),
        fields=(("job.id", "job_id"), "state"),
        timestamp_field="at",
    )
    translator = Translator(rules=[rule])
    payload = {"state": "done", "at": "2026-12-04T10:00:00Z", "job": {"queue": "q", "id": "j"}}
    payload = {"job": payload["job"], "kind": "state", **payload}  # the app's own order
    back = translator.to_legacy(translator.to_standard(payload).message)
    assert json.dumps(back) == json.dumps(payload)  # same keys, same order, nested too
