"""Scenario replays: the shipped scenarios, the format's errors, broken rules, duplicates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

import shim.replay as replay_module
from legacy.catalogue import CATALOGUE
from reference.app import ENDPOINTS, expected_differences
from shim.comparison import compare
from shim.diff import MismatchKind
from shim.manager import CompatWebSocketManager
from shim.record import RecordingError, record_endpoint
from shim.replay import COMPARED_STAGES, break_rule, broken_value, replay
from shim.rules import default_rules
from shim.scenario import (
    Scenario,
    ScenarioError,
    StepKind,
    dump_scenario,
    find_scenario_files,
    load_scenario,
    parse_scenario,
    recorded_scenario,
)
from shim.stages import Stage
from shim.translate import Translator

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.json"))
STAGES = list(COMPARED_STAGES)


def scenario(**overrides: Any) -> Scenario:
    document: dict[str, Any] = {
        "name": "t",
        "clients": [
            {"id": "old", "endpoint": "/ws", "format": "legacy"},
            {"id": "new", "endpoint": "/ws", "format": "envelope"},
        ],
        "timeline": [{"legacy": item.payload} for item in CATALOGUE],
    }
    document.update(overrides)
    return parse_scenario(document)


# -- the shipped scenarios ----------------------------------------------------------


def test_the_expected_scenarios_ship() -> None:
    names = {path.stem for path in SHIPPED}
    assert {"catalogue", "training_session", "per_endpoint", "unknown_shapes"} <= names


@pytest.mark.parametrize("stage", STAGES, ids=str)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
async def test_every_shipped_scenario_replays_clean(path: Path, stage: Stage) -> None:
    loaded = load_scenario(path)
    result = await replay(loaded, stage)
    assert result.report.mismatches == []
    assert result.unexpected == 0, result.failure_text()
    assert result.duplicates == ()
    assert not result.failed
    assert result.compared > 0
    assert result.matched + 2 * result.expected >= result.compared - result.expected
    assert loaded.name == path.stem


def test_catalogue_scenario_has_every_catalogued_payload() -> None:
    loaded = load_scenario(SCENARIOS / "catalogue.json")
    payloads = [step.legacy for step in loaded.timeline if step.legacy is not None]
    for item in CATALOGUE:
        assert item.payload in payloads, f"{item.name} is missing from catalogue.json"
    assert {client.format.value for client in loaded.clients} == {"legacy", "envelope"}


async def test_shipped_scenarios_exercise_every_translation_rule() -> None:
    used: set[str] = set()
    for path in SHIPPED:
        result = await replay(load_scenario(path), Stage.SHADOW)
        used |= {name for name, count in result.translation["rules"].items() if count}
    assert used == {rule.name for rule in default_rules()}


def test_per_endpoint_mirrors_the_reference_backend() -> None:
    loaded = load_scenario(SCENARIOS / "per_endpoint.json")
    assert {name: spec.topics for name, spec in loaded.endpoints.items()} == ENDPOINTS
    declared = {(e.kind, e.endpoint, e.topic) for e in loaded.expected_differences()}
    assert declared == {(e.kind, e.endpoint, e.topic) for e in expected_differences()}


def test_shipped_scenarios_load_back_from_their_dump() -> None:
    for path in SHIPPED:
        loaded = load_scenario(path)
        assert parse_scenario(json.loads(dump_scenario(loaded))) == loaded


def test_the_readme_example_is_a_valid_scenario() -> None:
    readme = (SCENARIOS / "README.md").read_text()
    block = re.search(r"```json\n(.*?)```", readme, re.S)
    assert block is not None
    example = parse_scenario(json.loads(block.group(1)))
    assert [step.kind for step in example.timeline] == [
        StepKind.LEGACY,
        StepKind.NEW,
        StepKind.CONNECT,
        StepKind.DISCONNECT,
    ]


# -- what the replay checks ------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES, ids=str)
async def test_a_broken_rule_makes_the_catalogue_fail(stage: Stage) -> None:
    loaded = load_scenario(SCENARIOS / "catalogue.json")
    result = await replay(loaded, stage, rules=break_rule("model_created"))
    assert result.failed
    kinds = {mismatch.kind for mismatch in result.report.mismatches}
    assert kinds == {MismatchKind.FIELD}  # model_id intact: the events still pair up
    assert {mismatch.type for mismatch in result.report.mismatches} == {"model_created"}
    # Old clients get the broken rendering; envelope clients never see the old shape.
    assert {mismatch.connection for mismatch in result.report.mismatches} == {"old-1", "old-2"}
    mismatch = result.report.mismatches[0]
    assert mismatch.legacy is not None and mismatch.new is not None
    assert broken_value("model_created") in json.dumps(mismatch.new)
    assert broken_value("model_created") not in json.dumps(mismatch.legacy)
    assert "model_created" in result.failure_text()


def test_break_rule_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown translation rule 'nope'.*training_update"):
        break_rule("nope")


async def test_a_filtered_endpoint_reports_missing_until_declared() -> None:
    document: dict[str, Any] = {
        "endpoints": {"/ws/training": {"topics": ["training"]}},
        "clients": [{"id": "old", "endpoint": "/ws/training", "format": "legacy"}],
        "timeline": [
            {"legacy": CATALOGUE[0].payload},  # training
            {"legacy": next(i.payload for i in CATALOGUE if i.name == "model_created")},
        ],
    }
    undeclared = await replay(scenario(**document), Stage.SHADOW)
    assert [(m.kind, m.topic, m.connection) for m in undeclared.report.mismatches] == [
        (MismatchKind.MISSING, "models", "old")
    ]
    assert undeclared.failed

    expected = [{"kind": "missing", "endpoint": "/ws/training", "topic": "models", "reason": "r"}]
    for stage in STAGES:
        declared = await replay(scenario(**document, expected=expected), stage)
        assert not declared.failed
        assert declared.expected == 1
        assert declared.unexpected == 0


async def test_an_envelope_client_can_subscribe_beyond_its_endpoint() -> None:
    loaded = load_scenario(SCENARIOS / "per_endpoint.json")
    translator = Translator()
    topics = []
    for step in loaded.timeline:
        if step.legacy is not None:
            topics.append(translator.to_standard(step.legacy).message.topic)
        elif step.new is not None:
            topics.append(step.new.topic)
    shadow = {c.client: c.events for c in (await replay(loaded, Stage.SHADOW)).clients}
    assert set(shadow.values()) == {loaded.events}  # legacy delivers everything to everyone
    live = {c.client: c.events for c in (await replay(loaded, Stage.LIVE)).clients}
    assert live == {
        "old-main": loaded.events,
        "new-main": loaded.events,
        "old-training": topics.count("training"),
        "new-training": topics.count("training"),
        "new-training-models": topics.count("training") + topics.count("models"),
    }
    assert topics.count("models") > 0 and topics.count("training") < loaded.events


async def test_unknown_shapes_are_counted_and_still_delivered() -> None:
    loaded = load_scenario(SCENARIOS / "unknown_shapes.json")
    for stage in STAGES:
        result = await replay(loaded, stage)
        assert result.untranslated == 7
        assert {client.events for client in result.clients} == {loaded.events}
        assert result.compared == 2 * 2 * loaded.events  # two clients, two sides


async def test_late_and_leaving_clients_get_what_happened_while_connected() -> None:
    loaded = load_scenario(SCENARIOS / "training_session.json")
    connect = next(i for i, s in enumerate(loaded.timeline) if s.connect == "late-viewer")
    leave = next(i for i, s in enumerate(loaded.timeline) if s.disconnect == "old-cli")
    after = sum(1 for s in loaded.timeline[connect:] if s.is_event)
    before = sum(1 for s in loaded.timeline[:leave] if s.is_event)
    for stage in STAGES:
        events = {c.client: c.events for c in (await replay(loaded, stage)).clients}
        assert events == {
            "old-dashboard": loaded.events,
            "new-dashboard": loaded.events,
            "late-viewer": after,
            "old-cli": before,
        }


async def test_a_client_getting_an_event_twice_fails_even_when_the_differ_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class SendsTwice(CompatWebSocketManager):
        async def broadcast(self, message: dict[str, Any]) -> None:
            await super().broadcast(message)
            await super().broadcast(message)

    monkeypatch.setattr(replay_module, "CompatWebSocketManager", SendsTwice)
    result = await replay(scenario(timeline=[{"legacy": CATALOGUE[0].payload}]), Stage.LIVE)
    assert result.unexpected == 0  # both sides sent it twice: they agree
    assert result.failed
    assert [(d.client, d.step, d.kind, len(d.frames)) for d in result.duplicates] == [
        ("old", 0, "legacy", 2),
        ("new", 0, "legacy", 2),
    ]
    assert "DUPLICATE: client old got 2 event frames for timeline[0]" in result.failure_text()


async def test_replay_needs_a_comparing_stage() -> None:
    with pytest.raises(ValueError, match="shadow or live"):
        await replay(scenario(), Stage.NEW)


# -- reports ------------------------------------------------------------------------------


async def test_comparison_renders_json_junit_markdown_and_a_table() -> None:
    good = scenario(name="good")
    bad = scenario(name="bad")
    comparison = await compare([("good.json", good)], stages=STAGES)
    assert comparison.ok
    broken = await compare(
        [("good.json", good), ("bad.json", bad)],
        stages=STAGES,
        rules=break_rule("training_update"),
    )
    assert not broken.ok and broken.unexpected_total == 4  # 1 old client x 2 scenarios x 2

    suite = ElementTree.fromstring(broken.to_junit()).find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("compare.good", "shadow"),
        ("compare.good", "live"),
        ("compare.bad", "shadow"),
        ("compare.bad", "live"),
    ]
    assert all(case.find("failure") is not None for case in cases)
    assert suite.get("failures") == "4"
    failure = cases[0].find("failure")
    assert failure is not None and "training_progress" in (failure.text or "")

    document = json.loads(broken.to_json())
    assert document["ok"] is False and document["unexpected_total"] == 4
    assert document["scenarios"][1]["runs"][1]["report"]["mismatches"][0]["kind"] == "field"

    table = broken.summary_table().splitlines()
    assert table[0].split()[:3] == ["scenario", "stage", "clients"]
    assert table[1].split()[-1] == "FAIL" and len(table) == 5
    markdown = broken.to_markdown()
    assert "| good | shadow |" in markdown and "## bad · live" in markdown
    assert "FAILED: 4 of 4 run(s)" in broken.verdict()


# -- the format ---------------------------------------------------------------------------


def _problems(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(document, source="s.json")
    assert str(caught.value).startswith("s.json: ")
    return caught.value.problems


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"name": "no spaces"}, "$.name", "pattern"),
        ({"clients": []}, "$.clients", "at least 1"),
        ({"timline": []}, "$.timline", "Extra inputs"),
        ({"timeline": [{"new": {"type": "Not A Type"}}]}, "$.timeline[0].new.type", "invalid"),
        ({"timeline": [{"new": {"type": "ping"}}]}, "$.timeline[0].new.type", "protocol type"),
        ({"timeline": [{"legacy": [1]}]}, "$.timeline[0].legacy", "dictionary"),
        ({"timeline": [{"connect": "old", "legacy": {}}]}, "$.timeline[0]", "exactly one"),
        ({"timeline": [{}]}, "$.timeline[0]", "got none"),
        ({"timeline": [{"connect": "ghost"}]}, "$.timeline[0].connect", "unknown client"),
        ({"timeline": [{"disconnect": "old"}] * 2}, "$.timeline[1].disconnect", "twice"),
        (
            {"timeline": [{"at": 1.0, "legacy": {}}, {"at": 0.5, "legacy": {}}]},
            "$.timeline[1].at",
            "earlier",
        ),
        (
            {"clients": [{"id": "a", "endpoint": "/ws", "format": "legacy", "subscribe": ["x"]}]},
            "$.clients[0]",
            "only envelope clients",
        ),
        (
            {"clients": [{"id": "a", "endpoint": "/ws", "format": "legacy"}] * 2},
            "$.clients[1].id",
            "duplicate",
        ),
        ({"endpoints": {"/ws": {"topics": ["bad topic"]}}}, '$.endpoints["/ws"].topics', "topic"),
        ({"expected": [{"kind": "missing", "field": "data.x"}]}, "$.expected[0]", "FIELD"),
        ({"masks": ["data..x"]}, "$.masks", "empty segment"),
        ({"endpoints": {"ws": {}}}, "$.endpoints", "starting with '/'"),
        ({"clients": [{"id": "a", "endpoint": "/ws"}]}, "$.clients[0].format", "Field required"),
    ],
)
def test_invalid_scenarios_name_the_json_path(
    change: dict[str, Any], where: str, message: str
) -> None:
    document: dict[str, Any] = {
        "name": "t",
        "clients": [{"id": "old", "endpoint": "/ws", "format": "legacy"}],
        **change,
    }
    problems = _problems(document)
    assert any(path == where and message in text for path, text in problems), problems


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n  "clients": [}')
    with pytest.raises(ScenarioError, match=r"broken.json: \$: not JSON: .* line 2 column"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="a scenario must be a JSON object"):
        parse_scenario([], source="list.json")
    with pytest.raises(ScenarioError, match="no such file"):
        find_scenario_files([tmp_path / "absent.json"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match=r"no \*.json"):
        find_scenario_files([empty])
    assert find_scenario_files([SCENARIOS]) == SHIPPED


async def test_a_recording_becomes_a_scenario_that_replays_clean() -> None:
    received = [(0.01 * n, item.fresh()) for n, item in enumerate(CATALOGUE)]
    made = recorded_scenario(
        name="recorded", endpoint="/ws/training", received=received, description="d"
    )
    assert [client.format.value for client in made.clients] == ["legacy", "envelope"]
    assert {client.endpoint for client in made.clients} == {"/ws/training"}
    assert parse_scenario(json.loads(dump_scenario(made))) == made
    for stage in STAGES:
        assert not (await replay(made, stage)).failed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ws://example.com/ws", "local backend"),
        ("ws://10.0.0.1:8000/ws", "local backend"),
        ("wss://127.0.0.1/ws", "only ws://"),
        ("http://127.0.0.1/ws", "only ws://"),
        ("ws://127.0.0.1:8000/ws?format=envelope", "old client"),
    ],
)
def test_recording_is_refused_off_this_machine(url: str, reason: str) -> None:
    with pytest.raises(RecordingError, match=reason):
        record_endpoint(url)


def test_recording_accepts_local_urls() -> None:
    assert record_endpoint("ws://127.0.0.1:8000/ws/training") == "/ws/training"
    assert record_endpoint("ws://localhost:8000/ws") == "/ws"
    assert record_endpoint("ws://[::1]:8000") == "/"


def test_a_new_step_may_use_the_apps_own_event_type() -> None:
    scenario = parse_scenario(
        {
            "name": "t",
            "clients": [{"id": "old", "endpoint": "/ws", "format": "legacy"}],
            "timeline": [{"new": {"type": "job_done", "data": {"id": 1}, "topic": "jobs"}}],
        },
        source="s.json",
    )
    step = scenario.timeline[0].new
    assert step is not None and step.type == "job_done"
