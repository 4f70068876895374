"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.service.redis_helpers import RedisServer


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A private redis-server on a free port (fault tests may kill and restart it)."""
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
