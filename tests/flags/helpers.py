"""Helpers for the flag tests: documents, a listener that can be awaited, log capture."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog

import flags.provider as provider
from flags import FlagSettings, UnleashStageDecider, default_document, write_document
from tests.support import UNIT

__all__ = ["Changes", "capture_flag_logs", "decider_for", "save", "write_toggles"]


class Changes:
    """A decider listener whose calls can be awaited."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def wait(self, timeout: float = 2.0) -> None:
        """Wait for the next call (within ``timeout`` units), then re-arm."""
        await asyncio.wait_for(self._event.wait(), timeout * UNIT)
        self._event.clear()

    def reset(self) -> None:
        self._event.clear()


def write_toggles(path: Path, doc: dict[str, Any] | None = None) -> Path:
    write_document(path, doc if doc is not None else default_document())
    return path


async def save(path: Path, text: str) -> None:
    """Overwrite ``path`` in place, as an editor does (not atomically)."""
    await asyncio.to_thread(path.write_text, text)


@contextlib.asynccontextmanager
async def decider_for(path: Path, **overrides: Any) -> AsyncIterator[UnleashStageDecider]:
    """A started embedded decider over ``path``, stopped afterwards."""
    settings = dataclasses.replace(
        FlagSettings(toggles_file=path, watch_interval=0.05), **overrides
    )
    decider = UnleashStageDecider(settings=settings)
    await decider.start()
    try:
        yield decider
    finally:
        await decider.stop()


@contextlib.contextmanager
def capture_flag_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The decider's structlog events, whatever structlog's global configuration says."""
    capture = structlog.testing.LogCapture()
    original = provider._log
    provider._log = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    try:
        yield capture.entries
    finally:
        provider._log = original
