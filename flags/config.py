"""Settings of the flag provider, from keyword arguments or the environment.

==============================  =========================================  =======================
variable                        meaning                                    default
==============================  =========================================  =======================
``WS_MIGRATION_TOGGLES``        embedded toggles file (client-features)    see below
``FLAGS_FILE``                  older name of ``WS_MIGRATION_TOGGLES``     see below
``UNLEASH_URL``                 Unleash API URL (``.../api``); enables it  unset: the file only
``UNLEASH_API_TOKEN``           backend (client) token for that server     unset
``UNLEASH_APP_NAME``            app name reported to Unleash               ``ws-migration``
``UNLEASH_ENVIRONMENT``         environment in the evaluation context      ``development``
``UNLEASH_REFRESH_INTERVAL``    whole seconds between fetches              ``5``
``WS_MIGRATION_FORCE_STAGE``    ``legacy|shadow|live|new``: beats all      unset
==============================  =========================================  =======================

Without either variable the toggles file is ``./ws-migration-toggles.json`` in
the current directory. It is never the file inside the installed package: an app
installed with pip would read site-packages' copy while the operator command
edited another. Both resolve the path with :func:`default_toggles_path` instead,
and :meth:`FlagSettings.from_env` asks for the file to be created from the
packaged document (:data:`PACKAGED_TOGGLES_FILE`) on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shim.stages import Stage

from .errors import FlagsConfigError
from .toggles import KILL_SWITCH_TOGGLE, STAGE_TOGGLE

__all__ = [
    "DEFAULT_TOGGLES_FILE",
    "PACKAGED_TOGGLES_FILE",
    "TOGGLES_ENV",
    "TOGGLES_FILENAME",
    "FlagSettings",
    "default_toggles_path",
]

#: The toggles document shipped with the package: the seed of a new toggles file,
#: read only (in an installed app it lives in site-packages).
PACKAGED_TOGGLES_FILE = Path(__file__).resolve().parent / "toggles.json"
#: Older name of :data:`PACKAGED_TOGGLES_FILE`, kept for existing imports; it is
#: no longer the default ``toggles_file`` (see :func:`default_toggles_path`).
DEFAULT_TOGGLES_FILE = PACKAGED_TOGGLES_FILE
#: The variable naming the toggles file (``FLAGS_FILE`` is its older name).
TOGGLES_ENV = "WS_MIGRATION_TOGGLES"
#: The toggles file in the current directory when no variable names one.
TOGGLES_FILENAME = "ws-migration-toggles.json"


def default_toggles_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$WS_MIGRATION_TOGGLES``, else ``$FLAGS_FILE``, else ``./ws-migration-toggles.json``.

    The app (through :class:`FlagSettings`) and the ``ws-migration flags`` command
    both call this, so they read and edit the same file wherever the package is
    installed. The cwd default is made absolute here, so a later ``chdir`` does
    not move it.
    """
    env = os.environ if environ is None else environ
    for name in (TOGGLES_ENV, "FLAGS_FILE"):
        value = env.get(name, "").strip()
        if value:
            return Path(value)
    return Path.cwd() / TOGGLES_FILENAME


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagSettings:
    """Where toggles come from and how the decider treats them.

    With ``unleash_url`` ``None`` (the default) toggles come from ``toggles_file``
    alone and nothing touches the network. With a URL the client polls that
    server every ``refresh_interval`` seconds and ``toggles_file`` only
    bootstraps it until the first fetch succeeds.

    ``toggles_file`` defaults to :func:`default_toggles_path`; ``create_missing``
    writes the packaged document there at ``start`` when the file does not exist
    (off for keyword construction, so a mistyped explicit path is reported rather
    than silently created; :meth:`from_env` turns it on).

    ``force_stage`` beats every flag; ``watch_interval`` ``None`` stops the
    embedded file from being watched for edits. ``report_to_server`` registers
    the app and sends evaluation metrics (server mode only).
    """

    toggles_file: Path = field(default_factory=default_toggles_path)
    create_missing: bool = False
    unleash_url: str | None = None
    api_token: str | None = None
    app_name: str = "ws-migration"
    environment: str = "development"
    refresh_interval: int = 5
    request_timeout: int = 5
    report_to_server: bool = True
    force_stage: Stage | None = None
    stage_toggle: str = STAGE_TOGGLE
    kill_switch_toggle: str = KILL_SWITCH_TOGGLE
    default_stage: Stage = Stage.LEGACY
    watch_interval: float | None = 0.25
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.unleash_url is not None and not self.unleash_url.startswith(
            ("http://", "https://")
        ):
            raise FlagsConfigError("UNLEASH_URL", f"not an http(s) URL: {self.unleash_url!r}")
        if self.refresh_interval < 1:
            raise FlagsConfigError("UNLEASH_REFRESH_INTERVAL", "must be at least 1 second")
        if self.request_timeout < 1:
            raise FlagsConfigError("request_timeout", "must be at least 1 second")
        if self.watch_interval is not None and self.watch_interval <= 0:
            raise FlagsConfigError("watch_interval", "must be positive (or None: no watch)")

    @property
    def mode(self) -> Literal["embedded", "server"]:
        """``"server"`` when an Unleash URL is configured, else ``"embedded"``."""
        return "embedded" if self.unleash_url is None else "server"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FlagSettings:
        """Read the variables in this module's table (``os.environ`` by default).

        The toggles file is created from the packaged document on first use.
        Raises :class:`FlagsConfigError` naming the variable when a value is invalid.
        """
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        refresh = text("UNLEASH_REFRESH_INTERVAL") or "5"
        try:
            refresh_interval = int(refresh)
        except ValueError:
            raise FlagsConfigError(
                "UNLEASH_REFRESH_INTERVAL", f"not a whole number of seconds: {refresh!r}"
            ) from None
        forced = text("WS_MIGRATION_FORCE_STAGE")
        force_stage: Stage | None = None
        if forced is not None:
            try:
                force_stage = Stage(forced.lower())
            except ValueError:
                allowed = "|".join(stage.value for stage in Stage)
                raise FlagsConfigError(
                    "WS_MIGRATION_FORCE_STAGE", f"{forced!r} is not one of {allowed}"
                ) from None
        return cls(
            toggles_file=default_toggles_path(env),
            create_missing=True,
            unleash_url=text("UNLEASH_URL"),
            api_token=text("UNLEASH_API_TOKEN"),
            app_name=text("UNLEASH_APP_NAME") or "ws-migration",
            environment=text("UNLEASH_ENVIRONMENT") or "development",
            refresh_interval=refresh_interval,
            force_stage=force_stage,
        )
