"""What the toggles do right now: the stage split per endpoint, by sampling.

Asks any :class:`~shim.stages.StageDecider` about ``sample_keys`` synthetic
connections per endpoint, so the split reflects the real engine's hashing
(rollout percentages, constraints, kill switch, override) rather than a
re-reading of the rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shim.stages import Stage, StageDecider

__all__ = ["StageSplit", "effective_stages"]


@dataclass(frozen=True, slots=True)
class StageSplit:
    """The share (0-1) of an endpoint's connections per stage, and their sample rates."""

    endpoint: str
    shares: Mapping[Stage, float]
    sample_rates: Mapping[Stage, float]

    def describe(self) -> str:
        """``live 25.0% (sample 0.25), shadow 75.0%``, largest share first."""
        parts = []
        for stage, share in sorted(self.shares.items(), key=lambda item: -item[1]):
            rate = self.sample_rates.get(stage, 1.0)
            sampled = f" (sample {rate:g})" if stage.compares and rate != 1.0 else ""
            parts.append(f"{stage.value} {share:.1%}{sampled}")
        return ", ".join(parts)


def effective_stages(
    decider: StageDecider, endpoints: Iterable[str], *, sample_keys: int = 1000
) -> dict[str, StageSplit]:
    """``{endpoint: StageSplit}`` from ``sample_keys`` anonymous connections each.

    Keys are ``status-0`` .. ``status-{n-1}`` with no user id, so two calls over
    unchanged toggles return the same split. Raises ``ValueError`` when
    ``sample_keys`` is not positive.
    """
    if sample_keys < 1:
        raise ValueError("sample_keys must be positive")
    result: dict[str, StageSplit] = {}
    for endpoint in endpoints:
        counts: Counter[Stage] = Counter()
        rates: dict[Stage, float] = {}
        for i in range(sample_keys):
            key = f"status-{i}"
            context = {"endpoint": endpoint, "connection_id": key, "sessionId": key}
            decision = decider.decide(endpoint, key, context)
            counts[decision.stage] += 1
            rates[decision.stage] = rates.get(decision.stage, 0.0) + decision.sample_rate
        result[endpoint] = StageSplit(
            endpoint=endpoint,
            shares={stage: n / sample_keys for stage, n in counts.items()},
            sample_rates={stage: rates[stage] / n for stage, n in counts.items()},
        )
    return result
