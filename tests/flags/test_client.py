"""The UnleashClient plumbing: caches, poll brackets, log demotion; data in, data out."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from UnleashClient.constants import ETAG, FEATURES_URL

from flags.client import MemoryCache, PollingCache, QuietPollFailures

URL = "http://127.0.0.1:4242/api/client/features"


def test_memory_cache_bootstraps() -> None:
    cache = MemoryCache()
    assert not cache.bootstrapped
    cache.bootstrap_from_text('{"features": []}')
    assert cache.bootstrapped
    assert cache.get(FEATURES_URL) == '{"features": []}'
    cache.mset({ETAG: "x"})
    assert cache.exists(ETAG)
    cache.destroy()
    assert cache.get(ETAG, "none") == "none"


def poll(cache: PollingCache, *statuses: int, failure: str | None = None) -> None:
    """What one polling job does to its cache, with the responses it saw."""
    cache.get(ETAG, "")
    for status in statuses:
        cache.observe_response(SimpleNamespace(url=URL, status_code=status))
    if failure is not None:
        cache.note_failure(failure)
    cache.get(FEATURES_URL)


@pytest.mark.parametrize(
    ("statuses", "failure", "outcome"),
    [
        ((200,), None, (True, "no response")),
        ((304,), None, (True, "no response")),
        ((), "connection refused", (False, "connection refused")),
        ((401,), "fetch failed", (False, f"HTTP 401 from {URL}")),
    ],
)
def test_each_poll_reports_whether_the_server_answered(
    statuses: tuple[int, ...], failure: str | None, outcome: tuple[bool, str]
) -> None:
    seen: list[tuple[bool, str]] = []
    cache = PollingCache(lambda answered, reason: seen.append((answered, reason)))
    cache.bootstrap_from_text("{}")
    cache.get(FEATURES_URL)  # the bootstrap load is not a poll
    poll(cache, *statuses, failure=failure)
    assert seen == [outcome]


def test_other_endpoints_do_not_count() -> None:
    seen: list[bool] = []
    cache = PollingCache(lambda answered, reason: seen.append(answered))
    cache.get(ETAG, "")
    cache.observe_response(SimpleNamespace(url=URL.replace("features", "metrics"), status_code=202))
    cache.get(FEATURES_URL)
    assert seen == [False]


def test_quiet_filter_demotes_poll_failures_only() -> None:
    reasons: list[str] = []
    quiet = QuietPollFailures(reasons.append)
    logger = logging.getLogger("UnleashClient")
    logger.setLevel(logging.INFO)
    try:

        def record(msg: str, *args: object) -> logging.LogRecord:
            return logger.makeRecord(logger.name, logging.ERROR, __file__, 1, msg, args, None)

        failed = record("Unleash Client feature fetch failed due to exception: %s", "refused")
        assert quiet.filter(failed) is False  # DEBUG is off: dropped
        assert failed.levelno == logging.DEBUG
        assert reasons == ["Unleash Client feature fetch failed due to exception: refused"]
        assert quiet.filter(record("Unleash Client metrics submission failed")) is False
        other = record("Something else")
        assert quiet.filter(other) is True and other.levelno == logging.ERROR
        logger.setLevel(logging.DEBUG)
        assert quiet.filter(record("Unleash Client registration failed: %s", "x")) is True
        assert len(reasons) == 1
    finally:
        logger.setLevel(logging.NOTSET)
