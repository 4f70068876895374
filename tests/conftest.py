"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _isolated_structlog() -> Iterator[None]:
    """Undo global structlog configuration a test made (``create_app`` configures it).

    Without this, a reference-backend test that sets the level to ``warning``
    silences the ``info`` events later tests assert on.
    """
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)
