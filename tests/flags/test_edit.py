"""Edits of the toggles document."""

from __future__ import annotations

import pytest

from flags import (
    Rule,
    ToggleEditError,
    default_document,
    endpoint_rules,
    kill_switch_on,
    set_endpoint_stage,
    set_kill_switch,
)
from shim.stages import Stage


def rules(doc: dict[str, object], endpoint: str) -> list[tuple[str, int, float]]:
    return [(r.stage.value, r.percent, r.sample_rate) for r in endpoint_rules(doc, endpoint)]


def test_full_flip_replaces_the_endpoints_rules_only() -> None:
    doc = set_endpoint_stage(default_document(), "/ws/training", Stage.SHADOW, sample_rate=0.5)
    assert rules(doc, "/ws/training") == [("shadow", 100, 0.5)]
    assert rules(doc, "/ws") == [("legacy", 100, 1.0)]


def test_partial_rollout_keeps_the_rest_on_the_previous_full_stage() -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.SHADOW, sample_rate=0.25)
    doc = set_endpoint_stage(doc, "/ws", Stage.LIVE, percent=25)
    assert rules(doc, "/ws") == [("live", 25, 1.0), ("shadow", 100, 0.25)]
    doc = set_endpoint_stage(doc, "/ws", Stage.LIVE, percent=50)  # the rest stays shadow
    assert rules(doc, "/ws") == [("live", 50, 1.0), ("shadow", 100, 0.25)]
    doc = set_endpoint_stage(doc, "/ws", Stage.LIVE)
    assert rules(doc, "/ws") == [("live", 100, 1.0)]
    doc = set_endpoint_stage(doc, "/ws", Stage.LEGACY)  # the rollback
    assert rules(doc, "/ws") == [("legacy", 100, 1.0)]


def test_explicit_rest_and_zero_percent() -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.NEW, percent=10, rest=Stage.LIVE)
    assert rules(doc, "/ws") == [("new", 10, 1.0), ("live", 100, 1.0)]
    doc = set_endpoint_stage(doc, "/ws", Stage.NEW, percent=0, rest=Stage.LIVE)
    assert rules(doc, "/ws") == [("live", 100, 1.0)]


def test_new_endpoint_and_missing_toggle_are_created() -> None:
    doc = set_endpoint_stage({"version": 2, "features": []}, "/ws/chat", Stage.SHADOW)
    assert endpoint_rules(doc, "/ws/chat") == [Rule(Stage.SHADOW, 100)]
    assert doc["features"][0]["enabled"] is True


def test_edits_do_not_mutate_their_input() -> None:
    doc = default_document()
    set_endpoint_stage(doc, "/ws", Stage.NEW)
    set_kill_switch(doc, True)
    assert doc == default_document()


def test_kill_switch_round_trip() -> None:
    doc = set_kill_switch(default_document(), True)
    assert kill_switch_on(doc)
    assert not kill_switch_on(set_kill_switch(doc, False))
    assert kill_switch_on(set_kill_switch({"features": []}, True))


def test_hand_made_shapes_are_refused() -> None:
    doc = default_document()
    strategy = doc["features"][0]["strategies"][0]
    strategy["constraints"][0]["values"] = ["/ws", "/ws/other"]
    with pytest.raises(ToggleEditError, match="by hand"):
        set_endpoint_stage(doc, "/ws", Stage.LIVE)


@pytest.mark.parametrize(("percent", "rate"), [(101, None), (-1, None), (50, 1.5)])
def test_out_of_range_values_are_refused(percent: int, rate: float | None) -> None:
    with pytest.raises(ValueError):
        set_endpoint_stage(default_document(), "/ws", Stage.LIVE, percent=percent, sample_rate=rate)
