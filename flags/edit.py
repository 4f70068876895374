"""Edits of the toggles document, and its Unleash admin import form.

An endpoint's rules are the stage toggle's ``flexibleRollout`` strategies whose
only constraint is ``endpoint IN [that endpoint]``, each with one variant (the
stage). They are evaluated in order, so ``[live 25 %, shadow 100 %]`` sends a
quarter of the keys live and keeps the rest in shadow. Every rule shares the
toggle name as ``groupId``, so raising 25 % to 50 % keeps the first quarter live.

Pure functions: each takes a document and returns a new one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shim.stages import Stage

from .errors import ToggleEditError
from .resolve import sample_rate_of
from .toggles import DEFAULT_ENDPOINTS, ENDPOINT_FIELD, KILL_SWITCH_TOGGLE, STAGE_TOGGLE

__all__ = [
    "Rule",
    "default_document",
    "endpoint_rules",
    "kill_switch_on",
    "set_endpoint_stage",
    "set_kill_switch",
    "to_import_format",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """``percent`` of an endpoint's keys (those no earlier rule took) get ``stage``."""

    stage: Stage
    percent: int
    sample_rate: float = 1.0


def default_document(endpoints: Iterable[str] = DEFAULT_ENDPOINTS) -> dict[str, Any]:
    """A document with every endpoint on ``legacy`` and the kill switch off."""
    doc: dict[str, Any] = {"version": 2, "features": []}
    for endpoint in endpoints:
        doc = set_endpoint_stage(doc, endpoint, Stage.LEGACY)
    return set_kill_switch(doc, False)


def endpoint_rules(
    doc: Mapping[str, Any], endpoint: str, *, toggle: str = STAGE_TOGGLE
) -> list[Rule]:
    """The endpoint's rules in evaluation order; empty when it has none.

    Raises :class:`ToggleEditError` when a strategy mentions the endpoint in a
    shape these edits do not own (several endpoints, extra constraints, a split
    between several variants).
    """
    feature = _find(doc, toggle)
    if feature is None:
        return []
    return [_rule_of(s, endpoint) for s in feature.get("strategies", []) if _owned(s, endpoint)]


def set_endpoint_stage(
    doc: Mapping[str, Any],
    endpoint: str,
    stage: Stage,
    *,
    percent: int = 100,
    rest: Stage | None = None,
    sample_rate: float | None = None,
    toggle: str = STAGE_TOGGLE,
) -> dict[str, Any]:
    """Route ``percent`` of ``endpoint``'s keys to ``stage`` and the rest to ``rest``.

    ``rest`` defaults to the endpoint's current full-rollout stage when that
    differs from ``stage``, else ``legacy``. ``sample_rate`` defaults to the
    rate the endpoint already had for ``stage`` (none: 1.0). Enables the toggle.
    Raises :class:`ToggleEditError` as :func:`endpoint_rules` does, and
    ``ValueError`` for a percent outside 0-100 or a rate outside 0-1.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be 0-100, got {percent}")
    if sample_rate is not None and not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be 0-1, got {sample_rate}")
    old = endpoint_rules(doc, endpoint, toggle=toggle)
    if rest is None:
        rest = next((r.stage for r in old if r.percent == 100 and r.stage != stage), Stage.LEGACY)
    rates = {r.stage: r.sample_rate for r in reversed(old)}
    rules = [
        Rule(stage, percent, sample_rate if sample_rate is not None else rates.get(stage, 1.0))
    ]
    if percent < 100:
        rules.append(Rule(rest, 100, rates.get(rest, 1.0)))
    if percent == 0:
        rules = rules[1:]

    new = copy.deepcopy(dict(doc))
    feature = _find(new, toggle)
    if feature is None:
        feature = _stage_toggle(toggle)
        new.setdefault("features", []).append(feature)
    feature["enabled"] = True
    strategies: list[Any] = feature.setdefault("strategies", [])
    at = next((i for i, s in enumerate(strategies) if _owned(s, endpoint)), len(strategies))
    kept = [s for s in strategies if not _owned(s, endpoint)]
    built = [_strategy(toggle, endpoint, rule) for rule in rules]
    feature["strategies"] = kept[:at] + built + kept[at:]
    return new


def set_kill_switch(
    doc: Mapping[str, Any], on: bool, *, toggle: str = KILL_SWITCH_TOGGLE
) -> dict[str, Any]:
    """Turn the kill switch on (every endpoint ``legacy``) or off."""
    new = copy.deepcopy(dict(doc))
    feature = _find(new, toggle)
    if feature is None:
        feature = {
            "name": toggle,
            "description": "Enabled: every WebSocket connection runs on the legacy manager.",
            "type": "kill-switch",
            "project": "default",
            "enabled": on,
            "impressionData": False,
            "strategies": [{"name": "default", "parameters": {}, "constraints": []}],
            "variants": [],
        }
        new.setdefault("features", []).append(feature)
    feature["enabled"] = on
    return new


def kill_switch_on(doc: Mapping[str, Any], *, toggle: str = KILL_SWITCH_TOGGLE) -> bool:
    """Whether the document's kill switch is enabled (for display; the engine decides)."""
    feature = _find(doc, toggle)
    return bool(feature and feature.get("enabled"))


def to_import_format(
    doc: Mapping[str, Any],
    *,
    project: str = "default",
    environment: str = "development",
) -> dict[str, Any]:
    """The document as Unleash's admin export, for ``POST /api/admin/features-batch/import``.

    Wrap it as ``{"project": ..., "environment": ..., "data": <this>}`` or paste
    it into the admin UI's import dialog. The ``endpoint`` context field comes
    without legal values: any endpoint path may be used in a constraint.
    """
    features, strategies, environments = [], [], []
    for feature in doc.get("features", []):
        name = feature["name"]
        features.append(
            {
                "name": name,
                "description": feature.get("description", ""),
                "type": feature.get("type", "release"),
                "project": project,
                "stale": False,
                "impressionData": feature.get("impressionData", False),
                "archived": False,
            }
        )
        for order, strategy in enumerate(feature.get("strategies", [])):
            strategies.append(
                {
                    "name": strategy["name"],
                    "featureName": name,
                    "title": strategy.get("title"),
                    "parameters": strategy.get("parameters", {}),
                    "constraints": strategy.get("constraints", []),
                    "variants": strategy.get("variants", []),
                    "disabled": False,
                    "segments": [],
                    "sortOrder": order,
                }
            )
        environments.append(
            {
                "name": name,
                "featureName": name,
                "environment": environment,
                "enabled": feature["enabled"],
                "variants": feature.get("variants", []),
            }
        )
    return {
        "features": features,
        "featureStrategies": strategies,
        "featureEnvironments": environments,
        "contextFields": [
            {
                "name": ENDPOINT_FIELD,
                "description": "The WebSocket endpoint path a connection arrived on.",
                "stickiness": False,
                "sortOrder": 0,
                "legalValues": [],
            }
        ],
        "featureTags": [],
        "segments": [],
        "tagTypes": [],
        "dependencies": [],
    }


def _find(doc: Mapping[str, Any], name: str) -> Any:
    return next((f for f in doc.get("features", []) if f.get("name") == name), None)


def _stage_toggle(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "WebSocket migration stage per endpoint: variant = legacy|shadow|live|new.",
        "type": "operational",
        "project": "default",
        "enabled": True,
        "impressionData": False,
        "strategies": [],
        "variants": [],
    }


def _mentions(strategy: Mapping[str, Any], endpoint: str) -> bool:
    return any(
        c.get("contextName") == ENDPOINT_FIELD
        and (endpoint in c.get("values", []) or c.get("value") == endpoint)
        for c in strategy.get("constraints", [])
    )


def _owned(strategy: Mapping[str, Any], endpoint: str) -> bool:
    """Whether ``strategy`` is one of ``endpoint``'s rules; raise if it half is."""
    if not _mentions(strategy, endpoint):
        return False
    constraints = strategy.get("constraints", [])
    simple = (
        strategy.get("name") == "flexibleRollout"
        and len(constraints) == 1
        and constraints[0].get("operator") == "IN"
        and not constraints[0].get("inverted", False)
        and constraints[0].get("values") == [endpoint]
        and len(strategy.get("variants", [])) == 1
    )
    if not simple:
        raise ToggleEditError(
            f"a strategy mentions {endpoint} with other endpoints, constraints or a "
            "variant split; edit the file by hand"
        )
    return True


def _rule_of(strategy: Mapping[str, Any], endpoint: str) -> Rule:
    variant = strategy["variants"][0]
    try:
        stage = Stage(variant["name"])
        percent = int(strategy.get("parameters", {}).get("rollout", "100"))
    except ValueError as exc:
        raise ToggleEditError(f"{endpoint}: unreadable rule: {exc}") from None
    return Rule(stage, percent, sample_rate_of(variant.get("payload")))


def _strategy(toggle: str, endpoint: str, rule: Rule) -> dict[str, Any]:
    variant: dict[str, Any] = {
        "name": rule.stage.value,
        "weight": 1000,
        "weightType": "variable",
        "stickiness": "default",
    }
    if rule.sample_rate != 1.0:
        value = orjson.dumps({"sample_rate": rule.sample_rate}).decode()
        variant["payload"] = {"type": "json", "value": value}
    return {
        "name": "flexibleRollout",
        "constraints": [
            {
                "contextName": ENDPOINT_FIELD,
                "operator": "IN",
                "values": [endpoint],
                "inverted": False,
                "caseInsensitive": False,
            }
        ],
        "parameters": {"rollout": str(rule.percent), "stickiness": "default", "groupId": toggle},
        "variants": [variant],
    }
