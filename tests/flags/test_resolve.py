"""The precedence: override > kill switch > variant > default; data in, decision out."""

from __future__ import annotations

import pytest

from flags import resolve_stage, sample_rate_of
from shim.stages import RoutingDecision, Stage


def variant(name: str, *, enabled: bool = True, rate: object = None) -> dict[str, object]:
    result: dict[str, object] = {"name": name, "enabled": enabled, "feature_enabled": enabled}
    if rate is not None:
        result["payload"] = {"type": "json", "value": f'{{"sample_rate": {rate}}}'}
    return result


@pytest.mark.parametrize("kill", [False, True])
def test_override_beats_everything(kill: bool) -> None:
    decision = resolve_stage(override=Stage.NEW, kill_switch=kill, variant=variant("shadow"))
    assert decision == RoutingDecision(Stage.NEW, 1.0)


def test_kill_switch_beats_the_variant() -> None:
    decision = resolve_stage(override=None, kill_switch=True, variant=variant("live", rate=0.5))
    assert decision == RoutingDecision(Stage.LEGACY, 1.0)


def test_variant_names_the_stage_and_carries_the_sample_rate() -> None:
    decision = resolve_stage(override=None, kill_switch=False, variant=variant("live", rate=0.25))
    assert decision == RoutingDecision(Stage.LIVE, 0.25)


@pytest.mark.parametrize(
    "evaluated",
    [
        None,  # not evaluated
        variant("disabled", enabled=False),  # toggle off / no strategy matched / unknown toggle
        variant("live", enabled=False),
        variant("canary"),  # not a stage
    ],
)
def test_default_when_no_stage_variant(evaluated: dict[str, object] | None) -> None:
    decision = resolve_stage(override=None, kill_switch=False, variant=evaluated)
    assert decision == RoutingDecision(Stage.LEGACY, 1.0)
    shadow = resolve_stage(
        override=None, kill_switch=False, variant=evaluated, default=Stage.SHADOW
    )
    assert shadow.stage is Stage.SHADOW


@pytest.mark.parametrize(
    ("payload", "rate"),
    [
        ({"type": "json", "value": '{"sample_rate": 0.25}'}, 0.25),
        ({"type": "json", "value": '{"sample_rate": 0}'}, 0.0),
        ({"type": "json", "value": '{"other": 1}'}, 1.0),
        ({"type": "json", "value": '{"sample_rate": 1.5}'}, 1.0),
        ({"type": "json", "value": '{"sample_rate": true}'}, 1.0),
        ({"type": "json", "value": "not json"}, 1.0),
        ({"type": "json", "value": "[0.5]"}, 1.0),
        ({"type": "string", "value": "0.5"}, 1.0),
        (None, 1.0),
    ],
)
def test_sample_rate_of_payloads(payload: object, rate: float) -> None:
    assert sample_rate_of(payload) == rate
