"""scripts/flags.py over a temporary toggles file."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from flags import endpoint_rules, kill_switch_on, read_document
from shim.stages import Stage

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "flags.py"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(
    toggles_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Run]:
    spec = importlib.util.spec_from_file_location("flags_cli", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("UNLEASH_URL", "WS_MIGRATION_FORCE_STAGE", "FLAGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script prepends the repo root
    saved = structlog.get_config()  # main() configures structlog for the terminal

    def run(*argv: str) -> tuple[int, str, str]:
        code = module.main(["--file", str(toggles_path), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    structlog.configure(**saved)


def test_set_rollout_then_rollback_in_one_command(run: Run, toggles_path: Path) -> None:
    code, out, _ = run("set", "/ws/training", "shadow")
    assert (code, out) == (0, "/ws/training: shadow 100%\n")
    code, out, _ = run("set", "/ws/training", "live", "--percent", "25", "--sample-rate", "0.5")
    assert (code, out) == (0, "/ws/training: live 25% -> shadow 100%\n")
    rules = endpoint_rules(read_document(toggles_path), "/ws/training")
    assert [(r.stage, r.percent, r.sample_rate) for r in rules] == [
        (Stage.LIVE, 25, 0.5),
        (Stage.SHADOW, 100, 1.0),
    ]
    assert run("set", "/ws/training", "legacy")[0] == 0
    assert [r.stage for r in endpoint_rules(read_document(toggles_path), "/ws/training")] == [
        Stage.LEGACY
    ]


def test_status_shows_split_rules_and_kill_switch(run: Run) -> None:
    run("set", "/ws", "live", "--percent", "50", "--rest", "shadow")
    code, out, err = run("status", "--keys", "2000")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "kill switch : off" in lines
    ws = next(line for line in lines if line.startswith("/ws "))
    assert "live 4" in ws or "live 5" in ws
    assert any("rules: live 50% -> shadow 100%" in line for line in lines)
    assert "/ws/training  legacy 100.0%" in lines


def test_kill_switch_on_and_off(run: Run, toggles_path: Path) -> None:
    run("set", "/ws", "new")
    assert run("kill", "on")[:2] == (0, "kill switch on\n")
    assert kill_switch_on(read_document(toggles_path))
    _, out, _ = run("status", "--keys", "10")
    assert "kill switch : ON" in out and "/ws           legacy 100.0%" in out
    run("kill", "off")
    assert not kill_switch_on(read_document(toggles_path))


def test_override_is_reported(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_MIGRATION_FORCE_STAGE", "shadow")
    code, out, _ = run("status", "--keys", "10")
    assert code == 0
    assert "override    : WS_MIGRATION_FORCE_STAGE=shadow beats every flag" in out
    assert "/ws           shadow 100.0%" in out


def test_refusals_exit_1_with_a_message(run: Run, toggles_path: Path) -> None:
    code, _, err = run("set", "/ws", "live", "--percent", "120")
    assert code == 1 and "percent" in err
    toggles_path.write_text("{not json")
    code, _, err = run("set", "/ws", "live")
    assert code == 1 and "not valid JSON" in err
    assert toggles_path.read_text() == "{not json"  # untouched


def test_export_prints_the_import_format(run: Run) -> None:
    code, out, _ = run("export", "--environment", "production")
    exported = json.loads(out)
    assert code == 0
    assert {e["environment"] for e in exported["featureEnvironments"]} == {"production"}
