from __future__ import annotations

from pathlib import Path

import pytest

from tests.flags.helpers import write_toggles


@pytest.fixture
def toggles_path(tmp_path: Path) -> Path:
    """A fresh copy of the shipped default toggles (everything legacy)."""
    return write_toggles(tmp_path / "toggles.json")
