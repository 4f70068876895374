"""Atomic writes and change detection of the toggles file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flags import (
    PACKAGED_TOGGLES_FILE,
    FileWatch,
    ToggleFileError,
    create_if_missing,
    default_document,
    read_document,
    set_kill_switch,
    write_document,
)


def test_write_is_atomic_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "toggles.json"
    write_document(path, default_document())
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    write_document(path, set_kill_switch(default_document(), True))
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert path.stat().st_mode & 0o777 == 0o640
    assert read_document(path) == set_kill_switch(default_document(), True)
    assert [p.name for p in tmp_path.iterdir()] == ["toggles.json"]  # no temp left over


def test_invalid_document_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "toggles.json"
    write_document(path, default_document())
    before = path.read_bytes()
    with pytest.raises(ToggleFileError):
        write_document(path, {"features": [{"name": "x"}]})
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_watch_reports_content_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "toggles.json"
    path.write_text(json.dumps(default_document()))
    watch = FileWatch(path)
    assert watch.poll() == path.read_bytes()  # the first poll reports
    assert watch.poll() is None
    os.utime(path, ns=(1, 1))  # touched, same bytes
    assert watch.poll() is None
    path.write_text("{}")
    assert watch.poll() == b"{}"


def test_watch_raises_while_the_file_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "toggles.json"
    watch = FileWatch(path)
    with pytest.raises(FileNotFoundError):
        watch.poll()
    path.write_text("{}")
    assert watch.poll() == b"{}"


def test_create_if_missing_copies_the_seed_once_and_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "ws-migration-toggles.json"
    assert create_if_missing(path, PACKAGED_TOGGLES_FILE)
    assert path.read_bytes() == PACKAGED_TOGGLES_FILE.read_bytes()
    path.write_text("{}")
    assert not create_if_missing(path, PACKAGED_TOGGLES_FILE)
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp left over
