"""Migration stages and the routing-decision contract the shim consumes.

The shim asks a :class:`StageDecider` which stage a connection runs in when the
connection arrives, and asks again for every live connection when the decider
says its toggles changed. It never asks per message: deciding is off the hot path.

``flags`` implements the decider from Unleash; tests and small apps can use
:class:`FixedStages`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

__all__ = ["FixedStages", "RoutingDecision", "Stage", "StageDecider"]


class Stage(StrEnum):
    """Who delivers to a connection, and who only records for the differ.

    - ``legacy``: only the legacy manager delivers; nothing is compared.
    - ``shadow``: legacy delivers; the new service records what it would have sent.
    - ``live``: the new service delivers; legacy records what it would have sent.
    - ``new``: only the new service delivers; nothing is compared.
    """

    LEGACY = "legacy"
    SHADOW = "shadow"
    LIVE = "live"
    NEW = "new"

    @property
    def new_delivers(self) -> bool:
        """True when the client's socket is fed by the new service."""
        return self in (Stage.LIVE, Stage.NEW)

    @property
    def compares(self) -> bool:
        """True when both sides run and the differ compares them."""
        return self in (Stage.SHADOW, Stage.LIVE)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """A stage plus the differ's sampling rate (0.0-1.0) for this connection."""

    stage: Stage
    sample_rate: float = 1.0


ChangeListener = Callable[[], None]


class StageDecider(Protocol):
    """Where routing decisions come from.

    ``decide`` must be cheap (tens of microseconds) and must not block or do I/O:
    it runs on the event loop when a connection arrives and when toggles change.
    ``context`` carries the connection's metadata as strings (``endpoint``,
    ``userId`` when known, ``connection_id``); ``stickiness_key`` is the stable key
    percentage rollouts hash (user id when known, else connection id).
    """

    def decide(
        self, endpoint: str, stickiness_key: str, context: Mapping[str, str]
    ) -> RoutingDecision: ...

    def add_listener(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) after toggles changed.

        Returns a function that removes the listener.
        """
        ...


@dataclass
class FixedStages:
    """A decider from a plain mapping ``endpoint -> stage``; for tests and small apps.

    :meth:`set` changes an endpoint's stage and notifies listeners, which is how a
    test flips stages without a flag system.
    """

    stages: dict[str, Stage] = field(default_factory=dict)
    default: Stage = Stage.LEGACY
    sample_rate: float = 1.0
    _listeners: list[ChangeListener] = field(default_factory=list, repr=False)

    def decide(
        self, endpoint: str, stickiness_key: str, context: Mapping[str, str]
    ) -> RoutingDecision:
        return RoutingDecision(self.stages.get(endpoint, self.default), self.sample_rate)

    def add_listener(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set(self, endpoint: str, stage: Stage) -> None:
        """Route ``endpoint`` to ``stage`` and re-route its live connections."""
        self.stages[endpoint] = stage
        for listener in list(self._listeners):
            listener()
