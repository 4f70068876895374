"""The client-features document: validation, and the shipped files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from flags import (
    DEFAULT_TOGGLES_FILE,
    KILL_SWITCH_TOGGLE,
    STAGE_TOGGLE,
    ToggleFileError,
    check_document,
    default_document,
    endpoint_rules,
    kill_switch_on,
    parse_document,
    read_document,
    set_endpoint_stage,
    to_import_format,
    toggles_digest,
)
from shim.stages import Stage

IMPORT_FILE = DEFAULT_TOGGLES_FILE.parent / "unleash-import.json"


def stage_strategy(doc: dict[str, Any]) -> dict[str, Any]:
    strategy: dict[str, Any] = doc["features"][0]["strategies"][0]
    return strategy


def variant0(doc: dict[str, Any]) -> dict[str, Any]:
    variant: dict[str, Any] = stage_strategy(doc)["variants"][0]
    return variant


def constraint0(doc: dict[str, Any]) -> dict[str, Any]:
    constraint: dict[str, Any] = stage_strategy(doc)["constraints"][0]
    return constraint


def on_ws(strategy: dict[str, Any]) -> bool:
    return bool(strategy["constraints"][0]["values"] == ["/ws"])


def test_shipped_file_has_both_endpoints_on_legacy_and_the_kill_switch_off() -> None:
    doc = read_document(DEFAULT_TOGGLES_FILE)
    assert endpoint_rules(doc, "/ws") == endpoint_rules(doc, "/ws/training")
    assert [(r.stage, r.percent) for r in endpoint_rules(doc, "/ws")] == [(Stage.LEGACY, 100)]
    assert not kill_switch_on(doc)
    assert {f["name"] for f in doc["features"]} == {STAGE_TOGGLE, KILL_SWITCH_TOGGLE}


def test_shipped_import_file_matches_the_toggles_file() -> None:
    # Regenerate with: python scripts/flags.py export > flags/unleash-import.json
    expected = to_import_format(read_document(DEFAULT_TOGGLES_FILE))
    assert json.loads(IMPORT_FILE.read_text()) == expected


def test_import_format_keeps_strategies_in_order_per_toggle() -> None:
    doc = set_endpoint_stage(default_document(), "/ws", Stage.LIVE, percent=10)
    exported = to_import_format(doc, environment="production")
    ws = [
        s
        for s in exported["featureStrategies"]
        if s["constraints"] and s["constraints"][0]["values"] == ["/ws"]
    ]
    assert [(s["variants"][0]["name"], s["sortOrder"]) for s in ws] == [("live", 0), ("legacy", 1)]
    assert {e["environment"] for e in exported["featureEnvironments"]} == {"production"}
    assert exported["contextFields"][0]["name"] == "endpoint"


def test_valid_document_parses() -> None:
    raw = json.dumps(default_document())
    assert parse_document(raw, source="test") == default_document()
    assert check_document(default_document()) == []


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("features"), "features: missing"),
        (lambda d: d["features"].append(d["features"][0]), "duplicate toggle"),
        (lambda d: d["features"][0].pop("enabled"), "enabled: missing"),
        (
            lambda d: variant0(d).update(name="canary"),
            "'canary' is not a stage",
        ),
        (lambda d: variant0(d).update(weight=2000), "weight"),
        (lambda d: stage_strategy(d)["parameters"].update(rollout=25), "must be a string"),
        (
            lambda d: constraint0(d).update(operator="EQUALS"),
            "not an Unleash operator",
        ),
        (lambda d: constraint0(d).update(values="/ws"), "list of strings"),
        (
            lambda d: variant0(d).update(payload={"type": "string", "value": "x"}),
            "payload",
        ),
        (
            lambda d: variant0(d).update(payload={"type": "json", "value": '{"sample_rate": 2}'}),
            "sample_rate must be a number from 0 to 1",
        ),
    ],
)
def test_problems_name_the_place(mutate: Any, fragment: str) -> None:
    doc = copy.deepcopy(default_document())
    mutate(doc)
    with pytest.raises(ToggleFileError) as info:
        parse_document(json.dumps(doc), source="toggles.json")
    assert any(fragment in problem for problem in info.value.problems), info.value.problems
    assert str(info.value).startswith("toggles.json: ")


def test_invalid_json_is_one_clear_problem() -> None:
    with pytest.raises(ToggleFileError) as info:
        parse_document(b'{"features": [', source="toggles.json")
    assert info.value.problems[0].startswith("not valid JSON")


def test_other_toggles_may_use_any_variant_names() -> None:
    doc = default_document()
    doc["features"].append(
        {
            "name": "other",
            "enabled": True,
            "strategies": [{"name": "default", "parameters": {}}],
            "variants": [{"name": "blue", "weight": 1000}],
        }
    )
    assert parse_document(json.dumps(doc), source="t") == doc


def test_digest_covers_only_the_named_toggles() -> None:
    doc = default_document()
    names = (STAGE_TOGGLE, KILL_SWITCH_TOGGLE)
    other = copy.deepcopy(doc)
    other["features"].append({"name": "unrelated", "enabled": True, "strategies": []})
    other["meta"] = {"revisionId": 7}
    assert toggles_digest(doc, names) == toggles_digest(other, names)
    flipped = set_endpoint_stage(doc, "/ws", Stage.SHADOW)
    assert toggles_digest(doc, names) != toggles_digest(flipped, names)


def test_read_document_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ToggleFileError, match="cannot read"):
        read_document(tmp_path / "missing.json")
