"""Limits on what one client may make the server do, sans I/O.

Everything here is plain synchronous bookkeeping with the time passed in by the
caller, so tests drive it with numbers instead of sleeps:

- :class:`TokenBucket` / :class:`RateLimiter`: inbound messages per second per
  connection, and when repeated excess counts as abuse;
- :class:`ConnectionCounter`: live connections per key (principal, client IP);
- :class:`OversizePolicy`: what an inbound message over the size limit gets.

Every structure is bounded by its configuration: a limiter remembers at most
``max_violations`` timestamps, a counter holds only keys with live connections.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum, StrEnum

__all__ = [
    "ConnectionCounter",
    "OversizePolicy",
    "RateLimit",
    "RateLimiter",
    "RateVerdict",
    "TokenBucket",
]


class OversizePolicy(StrEnum):
    """What an inbound message larger than ``max_message_size`` gets."""

    #: Close the connection with 1009 (message too big): a client that sends
    #: oversize frames is broken or hostile, and 1009 tells it not to retry as is.
    CLOSE = "close"
    #: Answer an ``error`` with code ``message_too_large``; the connection stays.
    #: The transport's own limit (uvicorn ``--ws-max-size``) still closes with 1009.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Inbound messages per connection: a token bucket, and when excess means abuse.

    ``rate`` messages per second on average, bursts of up to ``burst``. A message
    over the limit is answered with an ``error`` of code ``rate_limited`` and
    otherwise ignored; ``max_violations`` such messages within ``window`` seconds
    close the connection with 1008 (``None``: never close, only answer errors).

    The defaults leave an honest client far below the limit (a burst covers
    subscribing to ``max_subscriptions`` topics at once) and close a flooding one
    within milliseconds.
    """

    rate: float = 50.0
    burst: int = 200
    max_violations: int | None = 50
    window: float = 10.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.window <= 0:
            raise ValueError("rate, burst and window must be positive")
        if self.max_violations is not None and self.max_violations < 1:
            raise ValueError("max_violations must be at least 1 (or None)")


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; each message takes one.

    Time only moves forward as far as the bucket is concerned: a clock that goes
    back adds nothing.
    """

    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, *, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are enough at ``now``; True if taken."""
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without taking any)."""
        elapsed = max(0.0, now - self._updated)
        return min(self.capacity, self._tokens + elapsed * self.rate)


class RateVerdict(Enum):
    ALLOW = "allow"  #: process the message
    REJECT = "reject"  #: answer ``rate_limited`` and drop the message
    CLOSE = "close"  #: persistent abuse: close the connection with 1008


class RateLimiter:
    """One connection's bucket and its recent violations."""

    __slots__ = ("_bucket", "_violations", "limit")

    def __init__(self, limit: RateLimit, *, now: float) -> None:
        self.limit = limit
        self._bucket = TokenBucket(limit.rate, limit.burst, now=now)
        self._violations: deque[float] | None = None  # most connections never violate

    def check(self, now: float) -> RateVerdict:
        """Account one inbound message at ``now`` and say what to do with it."""
        if self._bucket.take(now):
            return RateVerdict.ALLOW
        if self.limit.max_violations is None:
            return RateVerdict.REJECT
        if self._violations is None:
            self._violations = deque(maxlen=self.limit.max_violations)
        self._violations.append(now)
        if (
            len(self._violations) >= self.limit.max_violations
            and now - self._violations[0] <= self.limit.window
        ):
            return RateVerdict.CLOSE
        return RateVerdict.REJECT


class ConnectionCounter:
    """Live connections per key, each key capped at ``limit``.

    Only keys with at least one live connection are kept, so memory follows the
    number of connections, not the number of keys ever seen.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a connection limit must be at least 1")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Count one more connection for ``key``; False (and nothing counted) if at the limit."""
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        """Count one connection of ``key`` less; releasing an unknown key is harmless."""
        count = self._counts.get(key, 0)
        if count <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count - 1

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """Number of keys with live connections."""
        return len(self._counts)

    def total(self) -> int:
        return sum(self._counts.values())
