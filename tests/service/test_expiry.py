"""CredentialDeadlines: one loop timer per connection, moved and cancelled."""

from __future__ import annotations

import asyncio

from service.expiry import CredentialDeadlines


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_deadline_fires_once_and_a_moved_one_later() -> None:
    clock = Clock()
    expired: list[str] = []
    deadlines: CredentialDeadlines[str] = CredentialDeadlines(expired.append, clock=clock)
    deadlines.track("a", "conn-a", websocket="ws-a", expires_at=clock.now + 0.05)
    deadlines.track("b", "conn-b", websocket="ws-b", expires_at=clock.now + 0.05)
    deadlines.move("b", clock.now + 0.2)
    assert deadlines.websocket("a") == "ws-a" and "b" in deadlines
    await asyncio.sleep(0.12)
    assert expired == ["conn-a"]
    await asyncio.sleep(0.15)
    assert expired == ["conn-a", "conn-b"]


async def test_forget_cancels_and_no_deadline_means_no_timer() -> None:
    clock = Clock()
    expired: list[str] = []
    deadlines: CredentialDeadlines[str] = CredentialDeadlines(expired.append, clock=clock)
    deadlines.track("a", "conn-a", websocket=None, expires_at=clock.now + 0.02)
    timer = deadlines.timer("a")
    deadlines.forget("a")
    deadlines.forget("unknown")  # harmless
    assert timer is not None and timer.cancelled() and not deadlines
    deadlines.track("b", "conn-b", websocket=None, expires_at=None)
    assert deadlines.timer("b") is None and deadlines.expires_at("b") is None
    assert not deadlines.is_due("b")
    await asyncio.sleep(0.05)
    assert expired == []


async def test_is_due_follows_the_wall_clock_before_the_timer_runs() -> None:
    clock = Clock()
    deadlines: CredentialDeadlines[str] = CredentialDeadlines(lambda _: None, clock=clock)
    deadlines.track("a", "conn-a", websocket=None, expires_at=clock.now + 60)
    assert not deadlines.is_due("a") and not deadlines.is_due("unknown")
    clock.now += 61
    assert deadlines.is_due("a")
    assert deadlines.expires_at("a") == 1060.0
