"""Operator endpoints for a migrating app, as one FastAPI router.

``migration_router(manager, token=...)`` serves, from nothing but the
:class:`~shim.manager.CompatWebSocketManager`:

=====================================  ==============================================
route                                  answer
=====================================  ==============================================
``GET  {prefix}/migration``            stage split and clients per endpoint, differ
                                       counters, last re-route (see :func:`migration_state`)
``POST {prefix}/stage``                change an endpoint's stage through ``set_stage``
                                       (409 when the router has none)
``GET  {prefix}/stats``                ``stats()`` of the service and of the shim
``GET  {prefix}/diff?limit=20``        differ counters and recent unexpected mismatches
``GET  {prefix}/diff/report``          the differ's report; ``?format=markdown`` for text
``GET  /metrics``                      Prometheus exposition (``metrics=False``: absent)
=====================================  ==============================================

Protection: every route, ``/metrics`` included, runs one check before anything
else (before the request body is even parsed), because the diff report carries
client payloads and ``/stage`` moves traffic:

- ``token="..."``: the request must carry ``Authorization: Bearer <token>``
  (compared with :func:`hmac.compare_digest`); otherwise 401 with
  ``WWW-Authenticate: Bearer``.
- ``authorize=callable``: the app's own operator check (an operator claim in a
  JWT, a session); a request passes when it returns true. With a token as well,
  either one admits the request.
- neither: every request is refused with 403 and a JSON body saying how to
  configure a token, so a forgotten setting never publishes the endpoints.
- ``allow_unauthenticated=True`` (and neither of the above): no check at all.
  **Unsafe**: for a laptop only; anyone who reaches the port can read payloads
  and flip stages.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError

from .manager import CompatWebSocketManager
from .metrics import MigrationCollector, make_registry
from .stages import Stage, StageDecider

__all__ = [
    "Authorize",
    "SetStage",
    "StageSetter",
    "migration_router",
    "migration_state",
]

_log = logging.getLogger(__name__)

#: The app's own operator check: true admits the request.
Authorize = Callable[[Request], bool | Awaitable[bool]]
#: Changes ``endpoint``'s stage for ``percent`` of its connections. Raise
#: ``ValueError`` to refuse the change (the router answers 400 with its message).
StageSetter = Callable[[str, Stage, int], Awaitable[None] | None]

_UNCONFIGURED = (
    "operator endpoints are disabled: no operator token is configured. Pass "
    "migration_router(manager, token=...) a secret (e.g. from the WS_MIGRATION_OPS_TOKEN "
    "environment variable) and send it as 'Authorization: Bearer <token>', or pass "
    "authorize= with your own operator check; allow_unauthenticated=True turns "
    "protection off (unsafe, local development only)"
)


class SetStage(BaseModel):
    """The body of ``POST {prefix}/stage``."""

    endpoint: str
    stage: Stage
    percent: int = Field(default=100, ge=0, le=100)


def migration_state(
    manager: CompatWebSocketManager,
    endpoints: Sequence[str] | None = None,
    *,
    sample_keys: int = 200,
) -> dict[str, Any]:
    """What ``GET {prefix}/migration`` returns (without the router's extra fields).

    ``{"endpoints": {name: {"stage", "split", "clients": {"legacy", "new"}}},
    "diff": counters per endpoint, "last_reroute": ...}``. ``stage`` is the stage
    most of ``sample_keys`` synthetic connections get from ``manager.decider``;
    ``split`` describes all of them (``"live 25.0%, legacy 75.0%"``). Counters
    only: no payload is in it. ``endpoints`` defaults to the manager's
    ``endpoint_topics`` and every endpoint with live connections.
    """
    shim = manager.stats()
    names = list(endpoints) if endpoints is not None else _known_endpoints(manager, shim)
    described = {}
    for name in names:
        shares, rates = _split(manager.decider, name, sample_keys)
        dominant = max(shares.items(), key=lambda item: item[1])[0]
        delivered = shim["endpoints"].get(name, {}).get("delivered_by", {})
        described[name] = {
            "stage": dominant.value,
            "split": _describe(shares, rates),
            "clients": {"legacy": delivered.get("legacy", 0), "new": delivered.get("new", 0)},
        }
    return {"endpoints": described, "diff": shim["diff"], "last_reroute": shim["last_reroute"]}


def migration_router(
    manager: CompatWebSocketManager,
    *,
    token: str | None = None,
    authorize: Authorize | None = None,
    allow_unauthenticated: bool = False,
    prefix: str = "/ops",
    metrics: bool = True,
    metrics_path: str = "/metrics",
    endpoints: Sequence[str] | None = None,
    set_stage: StageSetter | None = None,
    read_only_reason: str = "this router was built without set_stage: stages are read-only here",
    extra_state: Callable[[], Mapping[str, Any]] | None = None,
    sample_keys: int = 200,
) -> APIRouter:
    """The operator endpoints of the module docstring, behind one access check.

    ``app.include_router(migration_router(manager, token=secret))``. ``endpoints``
    are the WebSocket paths ``/migration`` describes and ``/stage`` accepts
    (default: as :func:`migration_state`). ``set_stage`` is how ``/stage``
    changes a stage (a flags file edit, an Unleash API call); without it ``/stage``
    answers 409 with ``read_only_reason`` and ``/migration`` says
    ``"editable": false``. ``extra_state()`` is merged into ``/migration``.

    Raises ``ValueError`` for an empty token, for ``allow_unauthenticated`` beside
    a token or ``authorize`` (a contradiction, not a preference), and for a
    ``prefix`` that does not start with ``/``.
    """
    if token is not None and not token:
        raise ValueError("token must be a non-empty secret (None disables the endpoints)")
    if allow_unauthenticated and (token is not None or authorize is not None):
        raise ValueError("allow_unauthenticated=True contradicts token=/authorize=")
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start and not end with '/': {prefix!r}")
    if allow_unauthenticated:
        _log.warning("migration_router: operator endpoints are unauthenticated (unsafe)")
    expected = None if token is None else token.encode()

    async def guard(request: Request) -> None:
        if allow_unauthenticated:
            return
        if expected is None and authorize is None:
            raise HTTPException(403, detail=_UNCONFIGURED)
        if expected is not None:
            presented = _bearer(request)
            if presented is not None and hmac.compare_digest(presented.encode(), expected):
                return
        if authorize is not None:
            verdict = authorize(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                return
        raise HTTPException(
            401,
            detail="operator credentials required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    router = APIRouter(dependencies=[Depends(guard)], tags=["ws-migration operations"])

    def names() -> list[str]:
        return list(endpoints) if endpoints is not None else _known_endpoints(manager)

    @router.get(f"{prefix}/migration")
    async def migration() -> dict[str, Any]:
        state = migration_state(manager, names(), sample_keys=sample_keys)
        state["editable"] = set_stage is not None
        if extra_state is not None:
            state.update(extra_state())
        return state

    @router.post(f"{prefix}/stage")
    async def change_stage(request: Request) -> dict[str, Any]:
        # The body is parsed here, after the guard: FastAPI parses declared bodies
        # before dependencies run, which would answer an anonymous caller 422.
        try:
            body = SetStage.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        if set_stage is None:
            raise HTTPException(409, read_only_reason)
        if body.endpoint not in names():
            raise HTTPException(404, f"unknown endpoint {body.endpoint!r}")
        try:
            done = set_stage(body.endpoint, body.stage, body.percent)
            if done is not None:
                await done
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"endpoint": body.endpoint, "stage": body.stage.value, "percent": body.percent}

    @router.get(f"{prefix}/stats")
    async def stats() -> dict[str, Any]:
        return {"service": manager.service.stats(), "shim": manager.stats()}

    @router.get(f"{prefix}/diff")
    async def diff(limit: int = Query(20, ge=0, le=1000)) -> dict[str, Any]:
        differ = manager.differ
        differ.flush()
        return {
            "counters": differ.counters(),
            "unexpected_total": differ.unexpected_total,
            "recent": [m.to_dict() for m in differ.recent(limit)],
        }

    @router.get(f"{prefix}/diff/report")
    async def diff_report(format: Literal["json", "markdown"] = "json") -> Response:
        manager.differ.flush()
        report = manager.differ.report()
        if format == "markdown":
            return PlainTextResponse(report.to_markdown(), media_type="text/markdown")
        return Response(report.to_json(), media_type="application/json")

    if metrics:
        from prometheus_client import generate_latest

        registry = make_registry(MigrationCollector(manager.service.stats, manager.stats))

        @router.get(metrics_path, include_in_schema=False)
        async def prometheus() -> Response:
            # Collecting reads stats() only; cheap enough for the event loop.
            return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    return router


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _known_endpoints(
    manager: CompatWebSocketManager, shim: Mapping[str, Any] | None = None
) -> list[str]:
    shim = manager.stats() if shim is None else shim
    return list(dict.fromkeys([*manager.endpoint_topics, *shim["endpoints"]]))


def _split(
    decider: StageDecider, endpoint: str, sample_keys: int
) -> tuple[dict[Stage, float], dict[Stage, float]]:
    """Share and mean sample rate of each stage over anonymous connections.

    The keys are those of ``flags.status.effective_stages`` (``status-0`` ...), so
    the split matches ``scripts/flags.py status``; the shim cannot import flags.
    """
    counts: Counter[Stage] = Counter()
    rates: dict[Stage, float] = {}
    total = max(sample_keys, 1)
    for i in range(total):
        key = f"status-{i}"
        context = {"endpoint": endpoint, "connection_id": key, "sessionId": key}
        decision = decider.decide(endpoint, key, context)
        counts[decision.stage] += 1
        rates[decision.stage] = rates.get(decision.stage, 0.0) + decision.sample_rate
    return (
        {stage: n / total for stage, n in counts.items()},
        {stage: rates[stage] / n for stage, n in counts.items()},
    )


def _describe(shares: Mapping[Stage, float], rates: Mapping[Stage, float]) -> str:
    """``live 25.0% (sample 0.25), shadow 75.0%``, largest share first."""
    parts = []
    for stage, share in sorted(shares.items(), key=lambda item: -item[1]):
        rate = rates.get(stage, 1.0)
        sampled = f" (sample {rate:g})" if stage.compares and rate != 1.0 else ""
        parts.append(f"{stage.value} {share:.1%}{sampled}")
    return ", ".join(parts)
