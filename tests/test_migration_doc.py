"""MIGRATION.md's code blocks run here, so the guide cannot drift from the code.

The guide is written for another team's backend, so the test plays that team:

- blocks fenced as ```` ```python file=myapp/ws_rules.py ```` (any language) are
  the team's own files: they are written to a fresh project folder, which is
  importable and the working directory of every command;
- the other ``python`` blocks run in order in one namespace (top-level ``await``
  allowed). The backend the swap block builds (its own ``JobManager`` inside
  ``CompatWebSocketManager``, the operator router added later) is then served by
  uvicorn: real clients, an old one and an envelope one, watch a job while the
  endpoint is flipped to ``new`` and back with ``ws-migration flags``, and the
  guide's ``curl`` lines read the operator endpoints. Last, the backend the
  final blocks build (the service alone) is served and spoken to;
- every ``ws-migration`` line of the ``bash`` blocks runs, in order, in the
  project folder (where its default toggles file is created), and the guide's
  lossy-rule claim is checked with ``ws-migration compare``.

A bash line that is none of ``ws-migration``, ``curl`` or ``pip install`` (the
installation this suite already runs in) fails the test: add it here first.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from flags import endpoint_rules, read_document
from shim import CompatWebSocketManager, Stage
from tests.support import UNIT, connect, receive_json, running_server, send_json

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "MIGRATION.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FILE_ATTRIBUTE = re.compile(r"\bfile=(\S+)")
BIN = Path(sys.executable).parent
ENDPOINT = "/jobs/ws"
OPS_TOKEN = "doc-test-operator-token"
#: The guide's example base URL, replaced by the test server's in ``curl`` lines.
EXAMPLE_URL = "http://127.0.0.1:8000"
#: Variables that would point the commands or the app away from the project folder.
FLAG_VARIABLES = ("WS_MIGRATION_TOGGLES", "FLAGS_FILE", "UNLEASH_URL", "WS_MIGRATION_FORCE_STAGE")


@dataclass(frozen=True)
class Block:
    language: str
    file: str | None  #: where the team keeps it, for file blocks
    code: str


def fenced() -> list[Block]:
    found = []
    for language, info, code in FENCE.findall(DOC.read_text()):
        file = FILE_ATTRIBUTE.search(info)
        found.append(Block(language, file.group(1) if file else None, code))
    return found


def blocks(language: str) -> list[str]:
    """The code of the blocks in ``language`` that run in the namespace (not files)."""
    return [b.code for b in fenced() if b.language == language and b.file is None]


def project_files() -> dict[str, str]:
    return {b.file: b.code for b in fenced() if b.file is not None}


def bash_lines() -> list[str]:
    lines = [
        line.strip()
        for code in blocks("bash")
        for line in code.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for line in lines:
        assert not line.endswith("\\"), f"continued bash line, keep it on one: {line}"
        assert line.startswith(("ws-migration ", "curl ", "pip install ")), (
            f"MIGRATION.md bash line the test does not run: {line!r}"
        )
    return lines


def write_project(folder: Path) -> Path:
    """The team's project: every file block, its packages, no toggles file yet."""
    for name, code in project_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        if path.suffix == ".py":
            (path.parent / "__init__.py").touch()
    return folder


def command_env(**extra: str) -> dict[str, str]:
    """The environment of the guide's commands: the venv's console scripts first."""
    env = {k: v for k, v in os.environ.items() if k not in FLAG_VARIABLES}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_line(line: str, project: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line],
        cwd=project,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60 * UNIT,
        check=False,
    )


async def run_line_async(line: str, project: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """``line`` without blocking the loop (a server in this loop must answer it)."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        cwd=project,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """The team's project folder, importable as it is from their own working directory."""
    folder = write_project(tmp_path / "project")
    packages = {Path(name).parts[0] for name in project_files() if name.endswith(".py")}
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for module in [m for m in sys.modules if m.split(".")[0] in packages]:
            del sys.modules[module]


def test_the_guide_has_code_to_check() -> None:
    assert len(blocks("python")) >= 8
    files = project_files()
    assert "myapp/ws_rules.py" in files and any(name.endswith(".json") for name in files)
    lines = bash_lines()
    assert sum(line.startswith("ws-migration flags set") for line in lines) >= 6
    assert any(line.startswith("ws-migration compare --rules") for line in lines)
    assert sum(line.startswith("curl ") for line in lines) >= 2


def test_no_instruction_edits_the_toolkit() -> None:
    text = DOC.read_text()
    for toolkit_file in ("shim/translate.py", "shim/rules.py", "default_rules", "scripts/"):
        assert toolkit_file not in text, toolkit_file


# -- the team's backend, served ------------------------------------------------------------


async def wait_for_stage(manager: CompatWebSocketManager, stage: Stage, clients: int) -> None:
    async with asyncio.timeout(5 * UNIT):
        while manager.stats()["endpoints"].get(ENDPOINT, {}).get("stages") != {
            stage.value: clients
        }:
            await asyncio.sleep(0.02)


async def watch_one_job(
    namespace: dict[str, Any], old: ClientConnection, envelope: ClientConnection
) -> None:
    """The team's own ``notify_job`` and a ``broadcast``: old shapes to the old client
    byte for byte as JSON, the team's event types to the envelope client."""
    manager, progress, done = namespace["manager"], namespace["PROGRESS"], namespace["DONE"]
    await manager.notify_job("j1", progress)
    await manager.broadcast(done)
    assert await receive_json(old) == progress
    assert await receive_json(old) == done
    first, second = await receive_json(envelope), await receive_json(envelope)
    assert (first["type"], first["topic"]) == ("job_progress", "jobs")
    assert first["data"] == {"job_id": "j1", "queue": "gpu", "pct": 0.25}
    assert first["timestamp"] == progress["at"]
    assert (second["type"], second["data"]["ok"]) == ("job_done", True)


async def check_the_shim_app(app: Any, namespace: dict[str, Any], project: Path) -> None:
    manager: CompatWebSocketManager = namespace["manager"]
    env = command_env(
        WS_MIGRATION_TOGGLES=os.environ["WS_MIGRATION_TOGGLES"], WS_MIGRATION_OPS_TOKEN=OPS_TOKEN
    )
    async with running_server(app) as url:
        base = url.replace("ws://", "http://")
        old = await connect(f"{url}{ENDPOINT}?job=j1")
        envelope = await connect(f"{url}{ENDPOINT}?job=j1&format=envelope")
        try:
            hello = await receive_json(envelope)
            assert hello["type"] == "connection_established"
            async with asyncio.timeout(3 * UNIT):  # the team's state, through the shim
                while len(manager.watchers.get("j1", [])) < 2:
                    await asyncio.sleep(0.01)
            assert {id(s) for s in manager.watchers["j1"]} == {
                id(s) for s in manager.active_connections
            }
            await wait_for_stage(manager, Stage.LEGACY, clients=2)
            await watch_one_job(namespace, old, envelope)
            # Forward to new and back, with the same two sockets connected throughout.
            for stage in (Stage.NEW, Stage.LEGACY):
                status, output = await run_line_async(
                    f"ws-migration flags set {ENDPOINT} {stage.value}", project, env
                )
                assert status == 0, output
                await wait_for_stage(manager, stage, clients=2)
                await watch_one_job(namespace, old, envelope)

            async with httpx.AsyncClient(base_url=base, timeout=5 * UNIT) as http:
                refused = await http.get("/ops/migration")
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
            curls = [line for line in bash_lines() if line.startswith("curl ")]
            for line in curls:
                status, output = await run_line_async(line.replace(EXAMPLE_URL, base), project, env)
                assert status == 0, (line, output)
                if "/ops/migration" in line:
                    assert ENDPOINT in output, output
        finally:
            await old.close()
            await envelope.close()


async def check_the_final_app(namespace: dict[str, Any]) -> None:
    service = namespace["websocket_service"]
    async with running_server(namespace["app"]) as url, connect(f"{url}{ENDPOINT}") as ws:
        hello = await receive_json(ws)
        assert hello["type"] == "connection_established"
        await send_json(ws, {"type": "job_cancel", "data": {"job_id": "j7"}})
        reply = await receive_json(ws)
        assert reply["type"] == "job_cancelled" and reply["data"] == {"job_id": "j7"}
        await namespace["publish_job_progress"]("j9", "gpu", 0.9)
        progress = await receive_json(ws, 2 * UNIT)
        assert (progress["type"], progress["topic"]) == ("job_progress", "jobs")
        assert progress["data"] == {"job_id": "j9", "queue": "gpu", "pct": 0.9}
    async with asyncio.timeout(3 * UNIT):
        while service.stats()["connections"]:
            await asyncio.sleep(0.01)


@pytest.mark.integration
async def test_python_blocks_run_in_order_and_the_apps_serve(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FLAG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # What FlagSettings.from_env() finds in the project folder, never in the repository.
    monkeypatch.setenv("WS_MIGRATION_TOGGLES", str(project / "ws-migration-toggles.json"))
    monkeypatch.setenv("WS_MIGRATION_OPS_TOKEN", OPS_TOKEN)
    namespace: dict[str, Any] = {"__name__": "migration_doc"}
    shim_app = None
    try:
        for number, code in enumerate(blocks("python"), 1):
            compiled = compile(
                code,
                f"MIGRATION.md python block {number}",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            result = eval(compiled, namespace)  # our own documentation, on purpose
            if result is not None:
                await result
            if shim_app is None and isinstance(namespace.get("manager"), CompatWebSocketManager):
                shim_app = namespace["app"]  # the swap block's app; later blocks extend it
        assert shim_app is not None, "no block builds a CompatWebSocketManager"
        assert type(namespace["manager"].legacy).__name__ == "JobManager"
        await check_the_shim_app(shim_app, namespace, project)
        await check_the_final_app(namespace)
    finally:
        if isinstance(namespace.get("manager"), CompatWebSocketManager):
            namespace["manager"].close()


# -- the commands ---------------------------------------------------------------------------


def test_ws_migration_commands_in_the_guide_work(project: Path) -> None:
    env = command_env()
    commands = [line for line in bash_lines() if line.startswith("ws-migration ")]
    assert (BIN / "ws-migration").exists(), "the console script: pip install -e ."
    for command in commands:
        done = run_line(command, project, env)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if command.startswith("ws-migration compare"):
            assert "OK:" in done.stdout and "untranslated" in done.stdout, done.stdout
    # The commands found and edited the team's default toggles file, in its folder.
    toggles = read_document(project / "ws-migration-toggles.json")
    assert [(rule.stage, rule.percent) for rule in endpoint_rules(toggles, ENDPOINT)] == [
        (Stage.NEW, 100)
    ]
    assert (project / "reports" / "ws-compare.xml").exists()
    exported = orjson.loads((project / "unleash-import.json").read_bytes())
    assert ENDPOINT in orjson.dumps(exported).decode()


def test_compare_fails_on_a_lossy_rule_and_names_it(project: Path) -> None:
    """What the guide says ``ws-migration compare`` does with its rounded ``pct`` rule."""
    (project / "myapp" / "lossy_rules.py").write_text(
        "from shim import FieldMap, TranslationRule\n"
        "from myapp.ws_rules import rules as exact\n\n\n"
        "def rules():\n"
        "    rounded = FieldMap('pct', 'pct', forward=round)\n"
        "    return [\n"
        "        TranslationRule('job_progress', 'job_progress', 'jobs',\n"
        "            discriminator=('event', 'progress'), timestamp_field='at',\n"
        "            fields=(('job.id', 'job_id'), ('job.queue', 'queue'), rounded)),\n"
        "        *[rule for rule in exact() if rule.name != 'job_progress'],\n"
        "    ]\n"
    )
    scenarios = [name for name in project_files() if name.endswith(".json")]
    done = run_line(
        f"ws-migration compare --rules myapp.lossy_rules:rules {' '.join(scenarios)}",
        project,
        command_env(),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "data.pct: legacy 0.25 | new 0" in done.stdout
    assert "rule job_progress: pct: legacy 0.25 | round trip 0" in done.stdout
    assert "FAILED" in done.stdout
