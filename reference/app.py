"""The reference backend: an ML training dashboard in the middle of its migration.

Written the old way (producers call ``manager.broadcast(dict)``, endpoints as in
the migration guide's "Old approach"), with one line changed: the manager is a
``CompatWebSocketManager`` whose stages come from ``flags``. New-style producers
(``TrainingService``, ``ModelService``) publish ``WebSocketMessage``s beside them.

``uvicorn reference.app:app`` serves it; ``create_app(settings)`` builds another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from flags import (
    FlagsError,
    FlagSettings,
    UnleashStageDecider,
    read_document,
    set_endpoint_stage,
    write_document,
)
from legacy import producers
from service import JWTAuthenticator, WebSocketService
from service.directsend import DirectSendMiddleware
from service.redact import install_log_redaction
from shim.diff import DiffConfig, Differ, ExpectedDifference, MismatchKind
from shim.manager import CompatWebSocketManager
from shim.ops import migration_router, migration_state
from shim.scope import ProducerScope
from shim.stages import Stage

from .config import Settings, configure_logging
from .limits import BodyLimitMiddleware
from .services import ModelService, TrainingService

__all__ = ["ENDPOINTS", "app", "create_app"]

_STATIC = Path(__file__).resolve().parent / "static"

#: The WebSocket endpoints and the topics their clients get on the new side.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/ws": ("training", "models", "system", "custom"),
    "/ws/training": ("training",),
}

#: The REST routes that take a JSON body (``parameters``): their size is bounded.
BODY_LIMITED = ("/api/training/start", "/api/models")


def expected_differences() -> tuple[ExpectedDifference, ...]:
    """/ws/training clients deliberately get only training events on the new side."""
    return tuple(
        ExpectedDifference(
            kind=MismatchKind.MISSING,
            endpoint="/ws/training",
            topic=topic,
            reason="the new side filters /ws/training to the training topic",
        )
        for topic in ("models", "system", "custom")
    )


class StartTraining(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)


class CreateModel(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    parameters: int = Field(default=1_000_000, ge=0)


def create_app(
    settings: Settings | None = None, flag_settings: FlagSettings | None = None
) -> FastAPI:
    """Build the backend; nothing starts until the app's lifespan runs."""
    settings = settings or Settings.from_env()
    flag_settings = flag_settings or FlagSettings.from_env()
    configure_logging(settings)

    service = WebSocketService(
        broker=settings.broker_url,
        retain={"training": "session_id"},
        heartbeat_interval=settings.heartbeat_interval,
        allowed_origins=settings.allowed_origins,
        allow_missing_origin=settings.allow_missing_origin,
        authenticate=None
        if settings.jwt_key is None
        else JWTAuthenticator(
            key=settings.jwt_key,
            algorithms=settings.jwt_algorithms,
            query_param=settings.token_query_param,
        ),
        max_connections_per_ip=settings.max_connections_per_ip,
        enforce_token_expiry=settings.enforce_token_expiry,
    )
    decider = UnleashStageDecider(settings=flag_settings)
    differ = Differ(DiffConfig(expected=expected_differences()))
    # The one line a migrating backend changes: ``manager = WebSocketManager()`` before.
    # Its producers are triggered once (a REST call, a session's task), so each event
    # is for every worker's clients: ProducerScope.CLUSTER.
    manager = CompatWebSocketManager(
        service=service,
        decider=decider,
        differ=differ,
        endpoint_topics=ENDPOINTS,
        producer_scope=ProducerScope.CLUSTER,
    )
    training = TrainingService(
        service,
        manager,
        epoch_seconds=settings.epoch_seconds,
        max_running=settings.max_running,
        max_sessions=settings.max_sessions,
    )
    models = ModelService(service, max_models=settings.max_models)

    async def autopilot() -> None:
        """Start a session every so often so the dashboard always has something to show."""
        while True:
            await asyncio.sleep(settings.autopilot_seconds)
            with contextlib.suppress(RuntimeError):
                await training.start_training({"epochs_per_phase": 6, "source": "autopilot"})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()  # after uvicorn configured logging: tokens never logged
        await service.start()
        await decider.start()
        manager.reroute()
        pilot = None
        if settings.autopilot_seconds > 0:
            pilot = asyncio.get_running_loop().create_task(autopilot())
        try:
            yield
        finally:
            if pilot is not None:
                pilot.cancel()
            await training.stop()
            await manager.stop()
            await decider.stop()
            await service.stop()

    app = FastAPI(title="ws-migration reference backend", lifespan=lifespan)
    # Broadcast frames are built once and written straight to uvicorn's sockets,
    # for the shim's legacy and new sides alike (see service.directsend).
    app.add_middleware(DirectSendMiddleware)
    # Refuse oversized bodies before FastAPI reads them whole (see reference.limits).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, paths=BODY_LIMITED)
    app.state.service = service
    app.state.manager = manager
    app.state.decider = decider
    app.state.training = training
    app.state.models = models
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    # -- WebSocket endpoints, the old way (unchanged endpoint code) ----------------

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await manager.connect(websocket)
        try:
            while True:
                data = await websocket.receive_text()
                if data == "status":
                    await manager.send_personal_message(
                        producers.status_payload(
                            "ok", "backend running", active_phases=training.active_phases()
                        ),
                        websocket,
                    )
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    @app.websocket("/ws/training")
    async def training_endpoint(websocket: WebSocket) -> None:
        await manager.connect(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    # -- REST --------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(_STATIC / "index.html")

    @app.post("/api/training/start")
    async def start_training(body: StartTraining | None = None) -> dict[str, Any]:
        try:
            session_id = await training.start_training((body or StartTraining()).parameters)
        except RuntimeError as exc:
            raise HTTPException(status_code=429, detail=str(exc)) from None
        return {"session_id": session_id}

    @app.get("/api/training")
    async def list_training() -> dict[str, Any]:
        return {
            "sessions": [s.snapshot() for s in training.sessions.values()],
            "phase_status": producers.phase_status,
        }

    @app.post("/api/models")
    async def create_model(body: CreateModel) -> dict[str, Any]:
        model_id = await models.create_model({"name": body.name, "parameters": body.parameters})
        return {"model_id": model_id}

    @app.get("/api/models")
    async def list_models() -> dict[str, Any]:
        return {"models": list(models.models.values())}

    # -- operator endpoints (shim.ops): behind WS_MIGRATION_OPS_TOKEN ---------------

    def set_stage(endpoint: str, stage: Stage, percent: int) -> Awaitable[None]:
        path = flag_settings.toggles_file

        def edit() -> None:
            document = read_document(path)
            changed = set_endpoint_stage(document, endpoint, stage, percent=percent)
            write_document(path, changed)

        async def run() -> None:
            try:
                await asyncio.to_thread(edit)  # file I/O and fsync stay off the event loop
            except FlagsError as exc:
                raise ValueError(str(exc)) from None

        return run()

    editable = flag_settings.mode == "embedded"
    app.include_router(
        migration_router(
            manager,
            token=settings.ops_token,
            endpoints=list(ENDPOINTS),
            set_stage=set_stage if editable else None,
            read_only_reason="stages come from the Unleash server; change them there",
            extra_state=lambda: {"flags_mode": flag_settings.mode},
        )
    )

    @app.get("/api/migration")
    async def dashboard_migration() -> dict[str, Any]:
        """The dashboard's read-only feed: stages, client counts, differ counters.

        Counters only (no payload, no mismatch detail), so it stays public like the
        rest of the dashboard; everything that reads payloads or changes a stage
        is under /ops and needs the operator token.
        """
        state = migration_state(manager, list(ENDPOINTS))
        state["editable"] = editable
        state["flags_mode"] = flag_settings.mode
        return state

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        healthy = bool(service.broker.healthy)
        body = {"broker": "up" if healthy else "down"}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return app


app = create_app()
