"""``ws-migration`` as pip installs it: ``python -m shim.cli``, a subprocess and its exit status.

Each run gets a clean environment for the toggles (no ``WS_MIGRATION_TOGGLES``,
``FLAGS_FILE`` or ``UNLEASH_URL`` from the developer's shell) and, unless a test
says otherwise, an empty working directory, where the default toggles file lands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from flags import PACKAGED_TOGGLES_FILE, endpoint_rules, read_document
from shim.stages import Stage
from tests.support import UNIT

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LOSSY = "tests.scripts.lossy_rules:lossy_rules"

_CLEARED = ("WS_MIGRATION_TOGGLES", "FLAGS_FILE", "UNLEASH_URL", "WS_MIGRATION_FORCE_STAGE")


def run(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    # The packages import from the checkout whatever the working directory.
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "shim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environ, **(env or {})},
        timeout=60 * UNIT,
        check=False,
    )


def lossy_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "lossy.json"
    payload = {"type": "job_progress", "job_id": "j1", "metrics": {"pct": 0.4}}
    scenario = {
        "name": "lossy",
        "clients": [{"id": "old-1", "endpoint": "/ws", "format": "legacy"}],
        "timeline": [{"at": 0.0, "legacy": {**payload, "timestamp": "2026-01-01T00:00:00Z"}}],
    }
    path.write_text(json.dumps(scenario))
    return path


# -- flags ------------------------------------------------------------------------------


def test_flags_set_creates_the_default_file_in_the_working_directory(tmp_path: Path) -> None:
    done = run("flags", "set", "/ws/training", "shadow", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "/ws/training: shadow 100%\n"), done.stderr
    toggles = tmp_path / "ws-migration-toggles.json"
    assert "created" in done.stderr and str(toggles) in done.stderr
    rules = endpoint_rules(read_document(toggles), "/ws/training")
    assert [r.stage for r in rules] == [Stage.SHADOW]
    # The packaged seed is never edited.
    assert endpoint_rules(read_document(PACKAGED_TOGGLES_FILE), "/ws/training")[0].stage is (
        Stage.LEGACY
    )

    done = run("flags", "status", "--keys", "100", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert f"source      : {toggles}" in done.stdout
    assert "/ws/training  shadow 100.0%" in done.stdout


def test_flags_honours_the_variable_and_file(tmp_path: Path) -> None:
    named = tmp_path / "named.json"
    done = run("flags", "kill", "on", cwd=tmp_path, env={"WS_MIGRATION_TOGGLES": str(named)})
    assert done.returncode == 0 and named.is_file()
    assert not (tmp_path / "ws-migration-toggles.json").exists()
    explicit = tmp_path / "missing.json"
    done = run("flags", "--file", explicit, "status", cwd=tmp_path)
    assert done.returncode == 1 and "cannot read" in done.stderr
    assert not explicit.exists()  # an explicit path is never created


def test_flags_export(tmp_path: Path) -> None:
    done = run("flags", "export", cwd=tmp_path)
    assert done.returncode == 0 and "featureEnvironments" in json.loads(done.stdout)


# -- compare ----------------------------------------------------------------------------


def test_compare_default_rules_on_the_shipped_scenarios_exit_0() -> None:
    done = run("compare", "--quiet", SCENARIOS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: ")


def test_compare_lossy_rules_fail_the_round_trip_naming_rule_and_path(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = run("compare", "--rules", LOSSY, lossy_scenario(tmp_path), "--json", report)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rule job_progress: metrics.pct: legacy 0.4 | round trip 0" in done.stdout
    assert "1 payload(s) fail the translation round trip" in done.stdout
    [failure] = orjson.loads(report.read_bytes())["round_trip"]
    assert (failure["rule"], failure["path"], failure["original"], failure["returned"]) == (
        "job_progress",
        "metrics.pct",
        0.4,
        0,
    )


def test_compare_accepts_a_translator(tmp_path: Path) -> None:
    done = run("compare", "--quiet", "--rules", "tests.scripts.lossy_rules:translator", SCENARIOS)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.scripts.lossy_rules", "expected package.module:callable"),
        ("tests.scripts.nowhere:rules", "cannot import tests.scripts.nowhere"),
        (
            "tests.scripts.lossy_rules:nothing",
            "tests.scripts.lossy_rules has no attribute 'nothing'",
        ),
        ("tests.scripts.lossy_rules:not_rules", "not_rules() returned non-rules (str)"),
        ("tests.scripts.lossy_rules:broken", "broken() raised RuntimeError: no rules today"),
    ],
)
def test_a_bad_rules_spec_exits_2_saying_why(spec: str, message: str) -> None:
    done = run("compare", "--rules", spec, SCENARIOS)
    assert done.returncode == 2
    assert f"--rules {spec!r}: {message}" in done.stderr
    assert done.stdout == ""


# -- the command itself -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["flags", "compare", "record"])
def test_every_command_explains_itself(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: ws-migration {command}")


def test_top_level_help_and_usage_errors() -> None:
    done = run("--help")
    assert done.returncode == 0 and all(c in done.stdout for c in ("flags", "compare", "record"))
    done = run("deploy")
    assert done.returncode == 2 and "unknown command 'deploy'" in done.stderr
    assert run().returncode == 2
