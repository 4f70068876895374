"""Brokers chosen by URL, with the history bounds as query parameters."""

from __future__ import annotations

import pytest

from service.brokers import MemoryBroker, from_url
from service.brokers.redis import RedisBroker


def test_memory_takes_history_bounds_from_the_url() -> None:
    broker = from_url("memory://?history_size=5&history_ttl=2.5")
    assert isinstance(broker, MemoryBroker)
    assert (broker._history_size, broker._history_ttl) == (5, 2.5)


def test_redis_keeps_its_prefix_and_gets_the_bounds_out_of_the_url() -> None:
    broker = from_url("redis://127.0.0.1:6379/0?prefix=app&history_size=7&history_ttl=60")
    assert isinstance(broker, RedisBroker)
    assert (broker._history_size, broker._history_ttl, broker._prefix) == (7, 60.0, "app")
    assert broker._url == "redis://127.0.0.1:6379/0"  # redis-py never sees our parameters


def test_defaults_without_parameters() -> None:
    broker = from_url("memory://")
    assert isinstance(broker, MemoryBroker)
    assert (broker._history_size, broker._history_ttl) == (1000, 300.0)


@pytest.mark.parametrize(
    "url",
    [
        "memory://?history_size=x",
        "redis://127.0.0.1/0?history_ttl=soon",
        "redis://h/0?history_size=-1",
    ],
)
def test_malformed_bounds_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        from_url(url)


def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unknown broker URL scheme"):
        from_url("kafka://localhost")
