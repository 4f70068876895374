"""Token bucket, rate limiter and connection counter: numbers in, verdicts out."""

from __future__ import annotations

import pytest

from service.limits import (
    ConnectionCounter,
    OversizePolicy,
    RateLimit,
    RateLimiter,
    RateVerdict,
    TokenBucket,
)


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4)  # 0.8 tokens
    assert bucket.take(0.5)  # 1.0 token
    assert bucket.tokens(100.0) == 3  # never above capacity
    assert bucket.take(100.0)


def test_bucket_ignores_a_clock_going_back() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_limiter_rejects_then_closes_on_persistent_abuse() -> None:
    limiter = RateLimiter(RateLimit(rate=1, burst=2, max_violations=3, window=10), now=0)
    verdicts = [limiter.check(0) for _ in range(5)]
    assert verdicts == [
        RateVerdict.ALLOW,
        RateVerdict.ALLOW,
        RateVerdict.REJECT,
        RateVerdict.REJECT,
        RateVerdict.CLOSE,
    ]


def test_violations_outside_the_window_are_forgiven() -> None:
    limiter = RateLimiter(RateLimit(rate=0.001, burst=1, max_violations=3, window=10), now=0)
    assert limiter.check(0) is RateVerdict.ALLOW
    assert limiter.check(0) is RateVerdict.REJECT
    assert limiter.check(1) is RateVerdict.REJECT
    assert limiter.check(20) is RateVerdict.REJECT  # violations at 0, 1, 20: 20 s apart
    assert limiter.check(21) is RateVerdict.REJECT  # 1, 20, 21: still 20 s apart
    assert limiter.check(22) is RateVerdict.CLOSE  # 20, 21, 22: three within 10 s


def test_window_counts_the_last_max_violations_only() -> None:
    limiter = RateLimiter(RateLimit(rate=0.001, burst=1, max_violations=2, window=5), now=0)
    assert limiter.check(0) is RateVerdict.ALLOW
    assert limiter.check(0) is RateVerdict.REJECT
    assert limiter.check(10) is RateVerdict.REJECT  # 0 and 10: 10 s apart
    assert limiter.check(12) is RateVerdict.CLOSE  # 10 and 12: 2 s apart


def test_limiter_without_close_only_rejects() -> None:
    limiter = RateLimiter(RateLimit(rate=1, burst=1, max_violations=None), now=0)
    assert limiter.check(0) is RateVerdict.ALLOW
    assert {limiter.check(0) for _ in range(1000)} == {RateVerdict.REJECT}


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": 0},
        {"burst": 0},
        {"window": 0},
        {"max_violations": 0},
    ],
)
def test_rate_limit_validation(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**bad)  # type: ignore[arg-type]


def test_default_rate_limit_leaves_a_subscribe_burst_alone() -> None:
    limit = RateLimit()
    limiter = RateLimiter(limit, now=0)
    assert all(limiter.check(0) is RateVerdict.ALLOW for _ in range(128))


def test_counter_caps_each_key_and_forgets_empty_keys() -> None:
    counter = ConnectionCounter(2)
    assert counter.acquire("a") and counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    assert counter.count("a") == 2 and counter.total() == 3 and len(counter) == 2
    counter.release("a")
    assert counter.acquire("a")
    for _ in range(5):  # over-releasing is harmless
        counter.release("a")
        counter.release("b")
    assert len(counter) == 0 and counter.total() == 0
    counter.release("never-seen")
    with pytest.raises(ValueError):
        ConnectionCounter(0)


def test_oversize_policy_values() -> None:
    assert OversizePolicy("close") is OversizePolicy.CLOSE
    assert OversizePolicy("error") is OversizePolicy.ERROR
