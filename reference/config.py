"""The reference backend's configuration, from environment variables.

========================  ======================================  ==========================
variable                  meaning                                 default
========================  ======================================  ==========================
``BROKER_URL``            service broker                          ``memory://``
``WS_MIGRATION_TOGGLES``  embedded Unleash toggles file           ``./ws-migration-toggles.json``
``FLAGS_FILE``            older name of ``WS_MIGRATION_TOGGLES``  (see flags.config)
``UNLEASH_URL``           Unleash server API (enables it)         unset: use the toggles file
``UNLEASH_API_TOKEN``     client token for the Unleash server     unset
``UNLEASH_APP_NAME``      app name reported to Unleash            ``ws-migration-reference``
``UNLEASH_ENVIRONMENT``   Unleash environment                     ``development``
``UNLEASH_REFRESH_INTERVAL``  seconds between toggle fetches       ``5``
``WS_MIGRATION_FORCE_STAGE``  emergency override of every stage    unset
``LOG_FORMAT``            ``console`` or ``json``                 ``console``
``LOG_LEVEL``             ``debug``/``info``/``warning``          ``info``
``TRAINING_EPOCH_SECONDS``  simulated seconds per epoch            ``0.5``
``TRAINING_AUTOPILOT_SECONDS``  start a session every N s (0: off)  ``20``
``TRAINING_MAX_RUNNING``  sessions running at once (more: 429)    ``5``
``TRAINING_MAX_SESSIONS``  sessions kept, oldest finished evicted  ``100``
``MODELS_MAX_KEPT``       models kept, oldest evicted             ``1000``
``API_MAX_BODY_BYTES``    REST body: training start, models (413; 0: off)  ``16384``
``WS_ALLOWED_ORIGINS``    comma-separated browser origins         unset: any origin
``WS_ALLOW_MISSING_ORIGIN``  admit clients without Origin (0/1)   ``1``
``WS_JWT_SECRET``         HS256 secret (>= 32 bytes): require JWT  unset: no authentication
``WS_JWT_PUBLIC_KEY_FILE``  PEM public key: require RS256 JWT     unset
``WS_TOKEN_QUERY_PARAM``  also read the token from ``?<name>=``   unset: off
``WS_ENFORCE_TOKEN_EXPIRY``  close at the token's ``exp`` (0/1)    ``1``
``WS_MAX_CONNECTIONS_PER_IP``  live connections per client IP     unset: no limit
``WS_MIGRATION_OPS_TOKEN``  bearer token for ``/ops/*``, ``/metrics``  unset: those refuse (403)
========================  ======================================  ==========================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from service.redact import redact_event_dict

__all__ = ["Settings", "configure_logging"]


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = "memory://"
    log_format: str = "console"
    log_level: str = "info"
    epoch_seconds: float = 0.5
    autopilot_seconds: float = 20.0
    #: Bounds on what the REST API keeps (reference.services, reference.limits);
    #: ``max_body_bytes=None`` turns the body limit off.
    max_running: int = 5
    max_sessions: int = 100
    max_models: int = 1000
    max_body_bytes: int | None = 16 * 1024
    heartbeat_interval: float | None = 30.0
    allowed_origins: tuple[str, ...] | None = None
    allow_missing_origin: bool = True
    jwt_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    token_query_param: str | None = None
    enforce_token_expiry: bool = True
    max_connections_per_ip: int | None = None
    #: Bearer token of the operator endpoints (shim.ops); None: they answer 403.
    ops_token: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        origins = os.environ.get("WS_ALLOWED_ORIGINS")
        per_ip = os.environ.get("WS_MAX_CONNECTIONS_PER_IP")
        key_file = os.environ.get("WS_JWT_PUBLIC_KEY_FILE")
        body_limit = int(os.environ.get("API_MAX_BODY_BYTES", str(16 * 1024)))
        return cls(
            allowed_origins=None
            if origins is None
            else tuple(o.strip() for o in origins.split(",") if o.strip()),
            allow_missing_origin=os.environ.get("WS_ALLOW_MISSING_ORIGIN", "1") != "0",
            jwt_key=Path(key_file).read_text() if key_file else os.environ.get("WS_JWT_SECRET"),
            jwt_algorithms=("RS256",) if key_file else ("HS256",),
            token_query_param=os.environ.get("WS_TOKEN_QUERY_PARAM") or None,
            enforce_token_expiry=os.environ.get("WS_ENFORCE_TOKEN_EXPIRY", "1") != "0",
            max_connections_per_ip=None if per_ip is None else int(per_ip),
            ops_token=os.environ.get("WS_MIGRATION_OPS_TOKEN") or None,
            broker_url=os.environ.get("BROKER_URL", "memory://"),
            log_format=os.environ.get("LOG_FORMAT", "console"),
            log_level=os.environ.get("LOG_LEVEL", "info"),
            epoch_seconds=float(os.environ.get("TRAINING_EPOCH_SECONDS", "0.5")),
            autopilot_seconds=float(os.environ.get("TRAINING_AUTOPILOT_SECONDS", "20")),
            max_running=int(os.environ.get("TRAINING_MAX_RUNNING", "5")),
            max_sessions=int(os.environ.get("TRAINING_MAX_SESSIONS", "100")),
            max_models=int(os.environ.get("MODELS_MAX_KEPT", "1000")),
            max_body_bytes=body_limit or None,
        )


def configure_logging(settings: Settings) -> None:
    """Route structlog through one renderer at the configured level."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_event_dict,
    ]
    if settings.log_format == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
