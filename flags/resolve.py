"""From evaluated flags to a routing decision: the precedence, and nothing else.

Precedence, highest first:

1. the environment override (``WS_MIGRATION_FORCE_STAGE``);
2. the kill switch: enabled means ``legacy``;
3. the stage toggle's variant, when it is enabled and names a stage;
4. the default stage (``legacy``): toggle missing or disabled, no strategy matched,
   or a variant that is not a stage.

Only a variant carries a sample rate (its JSON payload's ``sample_rate``); every
other outcome samples everything (1.0).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import orjson

from shim.stages import RoutingDecision, Stage

__all__ = ["resolve_stage", "sample_rate_of"]

_STAGES = {stage.value: stage for stage in Stage}


def resolve_stage(
    *,
    override: Stage | None,
    kill_switch: bool,
    variant: Mapping[str, object] | None,
    default: Stage = Stage.LEGACY,
) -> RoutingDecision:
    """Apply the module's precedence.

    ``variant`` is what ``UnleashClient.get_variant`` returns
    (``{"name", "enabled", "payload"?}``) or ``None`` when it was not evaluated.
    """
    if override is not None:
        return RoutingDecision(override)
    if kill_switch:
        return RoutingDecision(Stage.LEGACY)
    if variant is None or variant.get("enabled") is not True:
        return RoutingDecision(default)
    name = variant.get("name")
    stage = _STAGES.get(name) if isinstance(name, str) else None
    if stage is None:
        return RoutingDecision(default)
    return RoutingDecision(stage, sample_rate_of(variant.get("payload")))


def sample_rate_of(payload: object) -> float:
    """The ``sample_rate`` in a ``{"type": "json", "value": ...}`` payload, else 1.0.

    Anything unreadable or out of 0-1 counts as absent (validation reports it).
    """
    if not isinstance(payload, Mapping) or payload.get("type") != "json":
        return 1.0
    value = payload.get("value")
    return _parse_rate(value) if isinstance(value, str) else 1.0


@functools.lru_cache(maxsize=256)
def _parse_rate(value: str) -> float:
    # Cached: a toggle set has a handful of payloads, and decide() is hot.
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return 1.0
    rate = data.get("sample_rate", 1.0) if isinstance(data, dict) else 1.0
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        return 1.0
    return float(rate)
