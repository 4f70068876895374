"""MIGRATION.md's code blocks run here, so the guide cannot drift from the code.

Python blocks run in order in one namespace (top-level ``await`` allowed); the app
the last blocks build is then served by uvicorn and spoken to by a real client.
Bash blocks that call ``scripts/flags.py`` run against a copy of the toggles file.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import UNIT, connect, receive_json, running_server, send_json

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "MIGRATION.md"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(DOC.read_text()) if lang == language]


def test_the_guide_has_code_to_check() -> None:
    assert len(blocks("python")) >= 6
    assert len(blocks("bash")) >= 5


@pytest.mark.integration
async def test_python_blocks_run_in_order_and_the_final_app_serves() -> None:
    namespace: dict[str, Any] = {"__name__": "migration_doc"}
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
        service = namespace["websocket_service"]
        async with running_server(namespace["app"]) as url, connect(f"{url}/ws") as ws:
            hello = await receive_json(ws)
            assert hello["type"] == "connection_established"
            await send_json(ws, {"type": "custom", "data": {"hi": 1}})
            echo = await receive_json(ws)
            assert echo["type"] == "custom" and echo["data"] == {"echo": {"hi": 1}}
            await namespace["update_training_progress"]("s", 0.9, 9, 0.1, {})
            progress = await receive_json(ws, 2 * UNIT)
            assert progress["type"] == "training_progress" and progress["topic"] == "training"
        assert service.stats()["connections"] == 0
    finally:
        if "manager" in namespace:
            namespace["manager"].close()


def test_flag_commands_in_the_guide_work(tmp_path: Path) -> None:
    toggles = tmp_path / "toggles.json"
    shutil.copy(ROOT / "flags" / "toggles.json", toggles)
    env = {**os.environ, "FLAGS_FILE": str(toggles)}
    commands = [
        line.strip()
        for code in blocks("bash")
        for line in code.splitlines()
        if line.strip().startswith(".venv/bin/python scripts/flags.py")
    ]
    assert len(commands) >= 8
    for command in commands:
        argv = [sys.executable, *shlex.split(command)[1:]]
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60 * UNIT
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    final = orjson.loads(toggles.read_bytes())
    assert "new" in orjson.dumps(final).decode()
