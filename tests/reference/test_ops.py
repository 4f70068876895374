"""The operator endpoints: /ops/migration, /ops/stage, /ops/diff(/report), /metrics, /readyz."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flags import read_document, set_endpoint_stage, write_document
from shim.stages import Stage
from tests.reference.support import ENDPOINTS, Backend, eventually, training_finished

pytestmark = pytest.mark.integration


async def test_migration_shape(backend: Backend) -> None:
    await backend.clients_everywhere()
    state = await backend.migration()
    assert set(state) == {"endpoints", "diff", "editable", "flags_mode", "last_reroute"}
    assert state["editable"] is True and state["flags_mode"] == "embedded"
    assert set(state["endpoints"]) == set(ENDPOINTS)
    for info in state["endpoints"].values():
        assert info == {
            "stage": "legacy",
            "split": "legacy 100.0%",
            "clients": {"legacy": 2, "new": 0},
        }
    assert set(state["last_reroute"]) == {"connections", "changed", "seconds", "at"}


async def test_stage_endpoint_edits_the_file_and_validates(backend: Backend, toggles: Path) -> None:
    before = toggles.read_bytes()
    answer = await backend.http.post("/ops/stage", json={"endpoint": "/nope", "stage": "live"})
    assert answer.status_code == 404
    assert answer.json()["detail"] == "unknown endpoint '/nope'"
    answer = await backend.http.post("/ops/stage", json={"endpoint": "/ws", "stage": "purple"})
    assert answer.status_code == 422
    answer = await backend.http.post(
        "/ops/stage", json={"endpoint": "/ws", "stage": "live", "percent": 101}
    )
    assert answer.status_code == 422
    assert toggles.read_bytes() == before, "a refused edit changed the file"

    answer = await backend.http.post("/ops/stage", json={"endpoint": "/ws", "stage": "shadow"})
    assert answer.status_code == 200
    assert answer.json() == {"endpoint": "/ws", "stage": "shadow", "percent": 100}
    await backend.decides({"/ws": Stage.SHADOW, "/ws/training": Stage.LEGACY})
    state = await backend.migration()
    assert state["endpoints"]["/ws"]["stage"] == "shadow"


async def test_shadow_run_is_compared_with_no_unexpected_difference(
    backend: Backend, toggles: Path
) -> None:
    doc = read_document(toggles)
    for endpoint in ENDPOINTS:
        doc = set_endpoint_stage(doc, endpoint, Stage.SHADOW)
    write_document(toggles, doc)
    await backend.decides(dict.fromkeys(ENDPOINTS, Stage.SHADOW))
    clients = list((await backend.clients_everywhere()).values())
    assert backend.stages() == {Stage.SHADOW}

    await backend.create_model("shadowed")
    session_id = await backend.train(2)
    for client in clients:
        await client.wait_for(training_finished(session_id), timeout=5)

    def settled() -> bool:
        differ = backend.manager.differ
        differ.flush()
        counters = differ.counters()
        return all(counters.get(e, {}).get("compared", 0) > 0 for e in ENDPOINTS) and (
            counters["/ws/training"].get("expected", 0) > 0
        )

    # The model events /ws/training's legacy side sends and its new side does not
    # are "missing" once unmatched for settle_seconds (2 s): an expected difference.
    await eventually(settled, timeout=4)
    answer = await backend.http.get("/ops/diff")
    assert answer.status_code == 200
    diff = answer.json()
    assert diff["unexpected_total"] == 0, diff["recent"]
    assert diff["recent"] == []
    for endpoint in ENDPOINTS:
        counters = diff["counters"][endpoint]
        assert counters["compared"] > 0 and counters["matched"] > 0, counters
        assert counters["missing"] == counters["extra"] == counters["field"] == 0, counters
    # Two clients per endpoint, one model event each.
    assert diff["counters"]["/ws/training"]["expected"] == 2
    assert diff["counters"]["/ws"]["expected"] == 0

    report = await backend.http.get("/ops/diff/report", params={"format": "markdown"})
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/markdown")
    assert "/ws/training" in report.text
    as_json = await backend.http.get("/ops/diff/report")
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"

    metrics = await backend.http.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'ws_connections{endpoint="/ws",path="legacy"} 2.0' in text
    assert 'ws_connections{endpoint="/ws/training",path="new"} 0.0' in text
    assert 'ws_diff_events_total{endpoint="/ws/training",kind="expected"} 2.0' in text
    assert "ws_diff_events" in text


async def test_readyz_and_healthz(backend: Backend) -> None:
    answer = await backend.http.get("/readyz")
    assert answer.status_code == 200 and answer.json() == {"broker": "up"}
    answer = await backend.http.get("/healthz")
    assert answer.status_code == 200


async def test_operator_endpoints_need_the_token_and_the_dashboard_feed_does_not(
    backend: Backend,
) -> None:
    async with httpx.AsyncClient(base_url=backend.http_url, timeout=10) as anonymous:
        for path in ("/ops/migration", "/ops/diff", "/ops/diff/report", "/ops/stats", "/metrics"):
            answer = await anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == "Bearer"
        answer = await anonymous.post("/ops/stage", json={"endpoint": "/ws", "stage": "new"})
        assert answer.status_code == 401
        feed = await anonymous.get("/api/migration")
        assert feed.status_code == 200
        assert set(feed.json()) == {"endpoints", "diff", "editable", "flags_mode", "last_reroute"}
    assert backend.stages() <= {Stage.LEGACY}


async def test_at_every_stage_an_anonymous_or_wrong_token_flip_is_refused_and_changes_nothing(
    backend: Backend, toggles: Path
) -> None:
    wrong = {"authorization": "Bearer not-the-token"}
    async with httpx.AsyncClient(base_url=backend.http_url, timeout=10) as anonymous:
        for stage in Stage:
            answer = await backend.http.post("/ops/stage", json={"endpoint": "/ws", "stage": stage})
            assert answer.status_code == 200
            await backend.decides({"/ws": stage, "/ws/training": Stage.LEGACY})
            before = toggles.read_bytes()
            target = Stage.LEGACY if stage is not Stage.LEGACY else Stage.NEW
            for headers in ({}, wrong):
                answer = await anonymous.post(
                    "/ops/stage", json={"endpoint": "/ws", "stage": target}, headers=headers
                )
                assert answer.status_code == 401, (stage, headers)
            assert toggles.read_bytes() == before
            assert (await backend.migration())["endpoints"]["/ws"]["stage"] == stage.value
