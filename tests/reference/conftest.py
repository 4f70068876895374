from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flags import FlagSettings

# The real Unleash server's fixtures are shared with the flag tests: imported, not
# copied (``unleash`` starts the server once per session, ``admin`` archives the
# toggles a test created).
from tests.flags.test_unleash_server import admin, names, unleash
from tests.reference.support import Backend, copy_toggles, serve_reference

__all__ = ["admin", "backend", "names", "toggles", "unleash"]


@pytest.fixture
def toggles(tmp_path: Path) -> Path:
    """A tmp copy of the shipped flags/toggles.json: every endpoint legacy."""
    return copy_toggles(tmp_path)


@pytest.fixture
async def backend(toggles: Path) -> AsyncIterator[Backend]:
    """The reference backend on the embedded toggles file ``toggles``, watched every 0.1 s."""
    async with serve_reference(FlagSettings(toggles_file=toggles, watch_interval=0.1)) as served:
        yield served
