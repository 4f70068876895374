"""The toolkit as another team gets it: a wheel installed non-editable in a fresh venv.

The wheel is built from this checkout and installed with ``--no-deps`` into a new
virtualenv outside the checkout; its dependencies come from the test venv's
site-packages through a ``.pth`` line (which does not run that venv's own
``.pth`` files, so this checkout's editable install stays out of sight). The
job-queue team's project lives in a temporary folder: its ``jobqueue`` package
and ``installed_probe.py``. Then, from that folder, as a user would:

- ``ws-migration --help`` and ``ws-migration flags set /jobs/ws new`` work and
  write ``./ws-migration-toggles.json`` (never a file inside the package);
- the app, its own manager wrapped by ``CompatWebSocketManager`` with its own
  rules, imports the toolkit from the fresh venv, reads that toggles file and
  delivers a broadcast: the old client the app's exact bytes, the envelope
  client the app's own event type.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.support import UNIT

from .jobqueue.rules import PROGRESS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180 * UNIT,
        check=False,
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout with the toolkit's wheel installed."""
    work = tmp_path_factory.mktemp("installed")
    wheels = work / "wheels"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "--wheel-dir",
        wheels,
        ROOT,
        cwd=work,
    )
    (wheel,) = wheels.glob("ws_migration_toolkit-*.whl")
    target = work / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
        ).strip()
    )
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        wheel,
        cwd=work,
    )
    return target


def test_a_wheel_in_a_fresh_venv_migrates_the_teams_backend(
    fresh_venv: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(HERE / "jobqueue", project / "jobqueue")
    shutil.copy(HERE / "installed_probe.py", project / "installed_probe.py")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "WS_MIGRATION_TOGGLES", "FLAGS_FILE", "UNLEASH_URL"}
    }
    env["PATH"] = f"{fresh_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    command = fresh_venv / "bin" / "ws-migration"

    assert "compare" in run(command, "--help", cwd=project, env=env)
    run(command, "flags", "set", "/jobs/ws", "new", cwd=project, env=env)
    assert (project / "ws-migration-toggles.json").is_file()

    output = run(fresh_venv / "bin" / "python", "installed_probe.py", cwd=project, env=env)
    report = json.loads(output.strip().splitlines()[-1])
    site = str(fresh_venv)
    assert all(path.startswith(site) for path in report["modules"].values()), report
    assert not any(path.startswith(str(ROOT)) for path in report["modules"].values())
    assert Path(report["toggles_file"]).resolve() == (project / "ws-migration-toggles.json")
    assert report["stages"] == ["new"]
    assert report["hello"] == "connection_established"
    # At new the service renders it for the old client: the app's own bytes.
    assert report["old"] == json.dumps(PROGRESS, separators=(",", ":"), ensure_ascii=False)
    assert report["new"]["type"] == "job_progress"
    assert report["new"]["data"]["job_id"] == "j1"
