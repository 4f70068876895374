"""scripts/compare.py as CI and operators run it: a subprocess, its exit status and files."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx
import orjson
import pytest

from flags import PACKAGED_TOGGLES_FILE, FlagSettings
from reference.app import create_app
from reference.config import Settings
from shim.replay import COMPARED_STAGES, broken_value, replay
from shim.scenario import load_scenario
from tests.support import UNIT, running_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compare.py"
SCENARIOS = ROOT / "scenarios"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60 * UNIT,
        check=False,
    )


def failures(junit: Path) -> list[ElementTree.Element]:
    return ElementTree.parse(junit).getroot().findall("./testsuite/testcase/failure")


def test_the_shipped_scenarios_pass_and_every_report_is_written(tmp_path: Path) -> None:
    junit, report, markdown = tmp_path / "j.xml", tmp_path / "out" / "c.json", tmp_path / "c.md"
    done = run("scenarios", "--junit", junit, "--json", report, "--markdown", markdown)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = sorted(SCENARIOS.glob("*.json"))
    # Progress: one line per scenario on stderr, with a counter.
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == [
        f"[{n}/{len(shipped)}" for n in range(1, len(shipped) + 1)
    ]
    table = done.stdout.splitlines()
    assert table[0].split()[:4] == ["scenario", "stage", "clients", "events"]
    assert len([line for line in table if line.endswith(" ok")]) == 2 * len(shipped)
    assert table[-1].startswith("OK: ")

    cases = ElementTree.parse(junit).getroot().findall("./testsuite/testcase")
    assert len(cases) == 2 * len(shipped) and failures(junit) == []
    document = orjson.loads(report.read_bytes())
    assert document["ok"] is True
    assert [s["name"] for s in document["scenarios"]] == [path.stem for path in shipped]
    assert markdown.read_text().startswith("# Delivery comparison")


def test_a_broken_translation_rule_fails_the_comparison(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    done = run(SCENARIOS / "catalogue.json", "--break-rule", "training_update", "--junit", junit)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FIELD training_progress on /ws" in done.stdout
    assert broken_value("training_update") in done.stdout
    assert "FAILED: 2 of 2 run(s)" in done.stdout
    assert len(failures(junit)) == 2
    assert all("training_progress" in (f.text or "") for f in failures(junit))


def test_a_single_stage_and_quiet(tmp_path: Path) -> None:
    done = run(SCENARIOS / "catalogue.json", "--stage", "live", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("OK: 1 run(s)")


def test_a_malformed_scenario_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "clients": [], "timeline": [{"new": {"type": "Not A Type"}}]}')
    done = run(SCENARIOS / "catalogue.json", bad)
    assert done.returncode == 2
    assert f"{bad}: $.clients:" in done.stderr
    assert f"{bad}: $.timeline[0].new.type:" in done.stderr
    assert done.stdout == ""  # nothing replayed before the files were all valid

    bad.write_text("{not json")
    done = run(bad)
    assert done.returncode == 2 and f"{bad}: $: not JSON" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing-dir",), "missing-dir: $: no such file or directory"),
        (("scenarios", "--break-rule", "nope"), "unknown translation rule 'nope'"),
        (("record", "--url", "ws://example.com/ws", "--out", "x.json"), "local backend"),
        (("scenarios", "--stage", "new"), "invalid choice"),
        ((), "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.integration
async def test_recording_a_running_reference_backend_replays_clean(tmp_path: Path) -> None:
    toggles = tmp_path / "toggles.json"
    shutil.copyfile(PACKAGED_TOGGLES_FILE, toggles)
    app = create_app(
        Settings(autopilot_seconds=0, epoch_seconds=0.05, heartbeat_interval=None),
        FlagSettings(toggles_file=toggles),
    )
    out = tmp_path / "recorded.json"
    async with running_server(app) as url:
        recorder = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "record",
            "--url",
            f"{url}/ws",
            "--seconds",
            "2",
            "--out",
            str(out),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(15 * UNIT):  # the recorder's interpreter starts
                while not app.state.manager.active_connections:
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url="http" + url.removeprefix("ws")) as http:
                answer = await http.post(
                    "/api/training/start", json={"parameters": {"epochs_per_phase": 2}}
                )
                assert answer.status_code == 200, answer.text
            stdout, stderr = await asyncio.wait_for(recorder.communicate(), 20 * UNIT)
        finally:
            if recorder.returncode is None:
                recorder.kill()
                await recorder.wait()
    assert recorder.returncode == 0, stderr.decode()
    assert f"{out}: Recorded from {url}/ws" in stdout.decode()

    recorded = load_scenario(out)
    assert recorded.name == "recorded"
    assert [(c.endpoint, c.format.value) for c in recorded.clients] == [
        ("/ws", "legacy"),
        ("/ws", "envelope"),
    ]
    types = [step.legacy.get("type") for step in recorded.timeline if step.legacy is not None]
    # New producers (training_started, progress) and old ones (bookkeeping, completion).
    assert {"training_started", "training_update", "training_complete"} <= set(types)
    assert len(types) == recorded.events > 6
    for stage in COMPARED_STAGES:
        result = await replay(recorded, stage)
        assert not result.failed, result.failure_text()
        assert result.matched == result.compared > 0
