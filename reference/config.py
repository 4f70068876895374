"""The reference backend's configuration, from environment variables.

========================  ======================================  ==========================
variable                  meaning                                 default
========================  ======================================  ==========================
``BROKER_URL``            service broker                          ``memory://``
``FLAGS_FILE``            embedded Unleash toggles file (flags/)   ``flags/toggles.json``
``UNLEASH_URL``           Unleash server API (enables it)         unset: use ``FLAGS_FILE``
``UNLEASH_API_TOKEN``     client token for the Unleash server     unset
``UNLEASH_APP_NAME``      app name reported to Unleash            ``ws-migration-reference``
``UNLEASH_ENVIRONMENT``   Unleash environment                     ``development``
``UNLEASH_REFRESH_INTERVAL``  seconds between toggle fetches       ``5``
``WS_MIGRATION_FORCE_STAGE``  emergency override of every stage    unset
``LOG_FORMAT``            ``console`` or ``json``                 ``console``
``LOG_LEVEL``             ``debug``/``info``/``warning``          ``info``
``TRAINING_EPOCH_SECONDS``  simulated seconds per epoch            ``0.5``
``TRAINING_AUTOPILOT_SECONDS``  start a session every N s (0: off)  ``20``
========================  ======================================  ==========================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import structlog

__all__ = ["Settings", "configure_logging"]


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = "memory://"
    log_format: str = "console"
    log_level: str = "info"
    epoch_seconds: float = 0.5
    autopilot_seconds: float = 20.0
    heartbeat_interval: float | None = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            broker_url=os.environ.get("BROKER_URL", "memory://"),
            log_format=os.environ.get("LOG_FORMAT", "console"),
            log_level=os.environ.get("LOG_LEVEL", "info"),
            epoch_seconds=float(os.environ.get("TRAINING_EPOCH_SECONDS", "0.5")),
            autopilot_seconds=float(os.environ.get("TRAINING_AUTOPILOT_SECONDS", "20")),
        )


def configure_logging(settings: Settings) -> None:
    """Route structlog through one renderer at the configured level."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
