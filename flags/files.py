"""The embedded toggles file on disk: read, atomic write, change detection.

Synchronous and small: the decider calls :meth:`FileWatch.poll` from its own
timer, the operator command calls :func:`read_document` / :func:`write_document`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ToggleFileError
from .toggles import STAGE_TOGGLE, parse_document

__all__ = ["FileWatch", "create_if_missing", "read_document", "write_document"]


def read_document(path: Path, *, stage_toggle: str = STAGE_TOGGLE) -> dict[str, Any]:
    """Read and validate the toggles file; raise :class:`ToggleFileError` if unusable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ToggleFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    return parse_document(raw, source=str(path), stage_toggle=stage_toggle)


def write_document(path: Path, doc: Mapping[str, Any], *, stage_toggle: str = STAGE_TOGGLE) -> None:
    """Validate ``doc`` and atomically replace ``path`` with it.

    Writes a temporary file in the same folder, fsyncs it and ``os.replace``-s it
    over ``path``, so a watcher sees the old file or the new one, never half of
    one. Keeps the old file's permissions. Raises :class:`ToggleFileError` (and
    writes nothing) when ``doc`` is invalid, ``OSError`` when the folder is not
    writable.
    """
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    parse_document(text, source=f"new content for {path}", stage_toggle=stage_toggle)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_if_missing(path: Path, seed: Path) -> bool:
    """Copy ``seed`` to ``path`` unless ``path`` exists; True when it created it.

    Never replaces an existing file, even one created concurrently (by another
    worker or the operator command): the copy goes to a temporary file that is
    hard-linked into place, which fails when the name is taken, so a watcher
    never sees half a file. Raises ``OSError`` when ``seed`` cannot be read or
    the folder is not writable.
    """
    if path.exists():
        return False
    raw = seed.read_bytes()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class FileWatch:
    """Tells when a file's content changed, by stat first and content hash second.

    :meth:`poll` is cheap while nothing changed (one ``stat``); it reads the file
    only when its mtime, size or inode moved, and reports it only when the bytes
    differ from the last report.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._digest: str | None = None

    def poll(self) -> bytes | None:
        """New content since the last report (the first poll reports it), or ``None``.

        Raises ``OSError`` when the file cannot be read; the next poll tries again.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            self._stat = None
            raise
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._stat:
            return None
        raw = self.path.read_bytes()
        self._stat = key
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        return raw
