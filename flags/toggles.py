"""The toggles document: Unleash's client-features JSON, validated.

The embedded file and a server's ``GET /api/client/features`` share one format::

    {"version": 2, "features": [
        {"name": "ws-migration-stage", "enabled": true, "strategies": [
            {"name": "flexibleRollout",
             "constraints": [{"contextName": "endpoint", "operator": "IN",
                              "values": ["/ws/training"]}],
             "parameters": {"rollout": "25", "stickiness": "default",
                            "groupId": "ws-migration-stage"},
             "variants": [{"name": "live", "weight": 1000, "payload":
                           {"type": "json", "value": "{\\"sample_rate\\":0.25}"}}]}]},
        {"name": "ws-migration-kill-switch", "enabled": false, "strategies": [...]}]}

The stage toggle's variant names are stages and its optional JSON payload
carries the differ's ``sample_rate``. Everything here is pure: bytes in,
a document or a list of problems out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from shim.stages import Stage

from .errors import ToggleFileError

__all__ = [
    "DEFAULT_ENDPOINTS",
    "ENDPOINT_FIELD",
    "KILL_SWITCH_TOGGLE",
    "STAGE_TOGGLE",
    "check_document",
    "parse_document",
    "toggles_digest",
]

STAGE_TOGGLE = "ws-migration-stage"
KILL_SWITCH_TOGGLE = "ws-migration-kill-switch"
#: The context field strategies constrain to scope a rule to one endpoint.
ENDPOINT_FIELD = "endpoint"
DEFAULT_ENDPOINTS = ("/ws", "/ws/training")

_OPERATORS = frozenset(
    {
        "IN",
        "NOT_IN",
        "STR_CONTAINS",
        "STR_STARTS_WITH",
        "STR_ENDS_WITH",
        "NUM_EQ",
        "NUM_GT",
        "NUM_GTE",
        "NUM_LT",
        "NUM_LTE",
        "DATE_AFTER",
        "DATE_BEFORE",
        "SEMVER_EQ",
        "SEMVER_GT",
        "SEMVER_LT",
    }
)
_STAGES = frozenset(stage.value for stage in Stage)


def parse_document(
    raw: str | bytes, *, source: str, stage_toggle: str = STAGE_TOGGLE
) -> dict[str, Any]:
    """Parse and validate a client-features document; return it as a dict.

    Checks the JSON, the shape the Unleash engine needs, the stage toggle's
    variants (names are stages, payloads are ``{"sample_rate": 0..1}`` JSON) and
    finally that the Unleash engine itself takes every toggle. Raises
    :class:`ToggleFileError` listing every problem, naming ``source``.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ToggleFileError(source, [f"not valid JSON: {exc}"]) from None
    problems = check_document(doc, stage_toggle=stage_toggle)
    if not problems:
        problems = _engine_problems(raw if isinstance(raw, str) else raw.decode(), doc)
    if problems:
        raise ToggleFileError(source, problems)
    result: dict[str, Any] = doc
    return result


def check_document(doc: object, *, stage_toggle: str = STAGE_TOGGLE) -> list[str]:
    """Every problem of ``doc`` as a client-features document; empty when valid.

    Unknown keys are allowed (servers add ``project``, ``type``, ``meta``...).
    """
    if not isinstance(doc, dict):
        return ["the document must be a JSON object with a 'features' list"]
    features = doc.get("features")
    if not isinstance(features, list):
        return ["features: missing, or not a list"]
    problems: list[str] = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, dict):
            problems.append(f"{where}: not an object")
            continue
        name = feature.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: missing or not a string")
        elif name in seen:
            problems.append(f"{where}.name: duplicate toggle {name!r}")
        else:
            seen.add(name)
            where = f"features[{i}] ({name})"
        if not isinstance(feature.get("enabled"), bool):
            problems.append(f"{where}.enabled: missing or not true/false")
        strategies = feature.get("strategies")
        if not isinstance(strategies, list):
            problems.append(f"{where}.strategies: missing or not a list")
            strategies = []
        is_stage = name == stage_toggle
        for j, strategy in enumerate(strategies):
            problems += _check_strategy(strategy, f"{where}.strategies[{j}]", is_stage)
        problems += _check_variants(feature.get("variants", []), f"{where}.variants", is_stage)
    return problems


def toggles_digest(doc: Mapping[str, Any], names: Collection[str]) -> str:
    """A hash of the named toggles (and segments): equal digests decide equally."""
    features = doc.get("features")
    relevant = sorted(
        (f for f in features if isinstance(f, dict) and f.get("name") in names)
        if isinstance(features, list)
        else [],
        key=lambda f: str(f.get("name")),
    )
    blob = orjson.dumps(
        {"features": relevant, "segments": doc.get("segments", [])},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()


def _check_strategy(strategy: object, where: str, is_stage: bool) -> list[str]:
    if not isinstance(strategy, dict):
        return [f"{where}: not an object"]
    problems: list[str] = []
    if not isinstance(strategy.get("name"), str):
        problems.append(f"{where}.name: missing or not a string")
    parameters = strategy.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.append(f"{where}.parameters: not an object")
    else:
        problems += [
            f'{where}.parameters.{key}: must be a string (Unleash sends "25", not 25)'
            for key, value in parameters.items()
            if not isinstance(value, str)
        ]
    constraints = strategy.get("constraints", [])
    if not isinstance(constraints, list):
        problems.append(f"{where}.constraints: not a list")
        constraints = []
    for k, constraint in enumerate(constraints):
        problems += _check_constraint(constraint, f"{where}.constraints[{k}]")
    problems += _check_variants(strategy.get("variants", []), f"{where}.variants", is_stage)
    return problems


def _check_constraint(constraint: object, where: str) -> list[str]:
    if not isinstance(constraint, dict):
        return [f"{where}: not an object"]
    problems: list[str] = []
    if not isinstance(constraint.get("contextName"), str):
        problems.append(f"{where}.contextName: missing or not a string")
    operator = constraint.get("operator")
    if operator not in _OPERATORS:
        problems.append(f"{where}.operator: {operator!r} is not an Unleash operator")
    values = constraint.get("values")
    value = constraint.get("value")
    if values is None and value is None:
        problems.append(f"{where}: needs 'values' (a list) or 'value'")
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ):
        problems.append(f"{where}.values: must be a list of strings")
    if value is not None and not isinstance(value, str):
        problems.append(f"{where}.value: must be a string")
    return problems


def _check_variants(variants: object, where: str, is_stage: bool) -> list[str]:
    if not isinstance(variants, list):
        return [f"{where}: not a list"]
    problems: list[str] = []
    for n, variant in enumerate(variants):
        at = f"{where}[{n}]"
        if not isinstance(variant, dict):
            problems.append(f"{at}: not an object")
            continue
        name = variant.get("name")
        if not isinstance(name, str):
            problems.append(f"{at}.name: missing or not a string")
        elif is_stage and name not in _STAGES:
            problems.append(f"{at}.name: {name!r} is not a stage ({'|'.join(sorted(_STAGES))})")
        weight = variant.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 1000:
            problems.append(f"{at}.weight: must be a whole number 0-1000")
        if "payload" in variant and is_stage:
            problems += _check_payload(variant["payload"], f"{at}.payload")
    return problems


def _check_payload(payload: object, where: str) -> list[str]:
    if not isinstance(payload, dict) or payload.get("type") != "json":
        return [f'{where}: must be {{"type": "json", "value": "{{\\"sample_rate\\": 0.25}}"}}']
    value = payload.get("value")
    try:
        data = orjson.loads(value) if isinstance(value, str) else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return [f"{where}.value: must be a JSON object encoded as a string"]
    rate = data.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        return [f"{where}.value: sample_rate must be a number from 0 to 1, got {rate!r}"]
    return []


def _engine_problems(raw: str, doc: Mapping[str, Any]) -> list[str]:
    # The engine drops a state it cannot read without raising, so ask it which
    # toggles it knows afterwards. yggdrasil_engine is UnleashClient's engine.
    from yggdrasil_engine.engine import UnleashEngine

    engine = UnleashEngine()
    try:
        warnings = engine.take_state(raw)
        known = {toggle.name for toggle in engine.list_known_toggles()}
    except Exception as exc:  # the engine's own parser; its errors vary
        return [f"rejected by the Unleash engine: {exc}"]
    problems = [
        f"features ({name}): not accepted by the Unleash engine"
        for name in (f["name"] for f in doc["features"])
        if name not in known
    ]
    if warnings:
        problems.append(f"Unleash engine warnings: {warnings}")
    return problems
