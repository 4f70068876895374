"""Building the UnleashClient for each deployment, and watching its polls.

Both deployments evaluate with the same ``UnleashClient`` (and so the same
Unleash engine); they differ only in where its features come from:

- embedded: :func:`embedded_client` bootstraps a client from the file's text and
  initializes it with ``fetch_toggles=False``, metrics and registration off, so
  it never opens a socket. A new file means a new client.
- server: :func:`server_client` polls the server in the client's scheduler
  thread. Its :class:`PollingCache` starts from the bootstrap text and keeps the
  last fetched features, which the client falls back on while the server is away,
  and tells after every poll whether the server answered.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from UnleashClient.cache import BaseCache
from UnleashClient.clients.unleash_client import UnleashClient
from UnleashClient.constants import ETAG, FEATURES_URL
from UnleashClient.events import BaseEvent
from UnleashClient.utils import InstanceAllowType

from .config import FlagSettings

__all__ = [
    "MemoryCache",
    "PollingCache",
    "QuietPollFailures",
    "embedded_client",
    "server_client",
]

# Never contacted (".invalid" cannot resolve): the embedded client has no server.
_NO_SERVER = "http://embedded.invalid/api"
# The embedded client's cache never changes under it; reloading it is pointless.
_EMBEDDED_RELOAD_SECONDS = 3600


class MemoryCache(BaseCache):
    """An UnleashClient cache in memory: nothing on disk, one per client."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def bootstrap_from_text(self, raw: str) -> None:
        """Seed the features (client-features JSON) the client starts from."""
        self.set(FEATURES_URL, raw)
        self.bootstrapped = True

    def set(self, key: str, value: Any) -> None:
        self._values[key] = value

    def mset(self, data: dict[str, Any]) -> None:
        self._values.update(data)

    def get(self, key: str, default: Any | None = None) -> Any:
        return self._values.get(key, default)

    def exists(self, key: str) -> bool:
        return key in self._values

    def destroy(self) -> None:
        self._values.clear()


PollListener = Callable[[bool, str], None]


class PollingCache(MemoryCache):
    """A :class:`MemoryCache` that reports each poll's outcome to ``on_poll``.

    UnleashClient's polling job reads the ETag from its cache right before it
    fetches and reads the features right after it applied (or failed) the fetch;
    those two reads bracket one poll. :meth:`observe_response` is the requests
    response hook that says whether the server answered (200 or 304) within the
    bracket. ``on_poll(answered, reason)`` runs in the client's scheduler thread.
    """

    def __init__(self, on_poll: PollListener) -> None:
        super().__init__()
        self._on_poll = on_poll
        self._polling = False
        self._answered = False
        self._reason = ""

    def get(self, key: str, default: Any | None = None) -> Any:
        if key == ETAG:
            self._polling, self._answered, self._reason = True, False, ""
        value = super().get(key, default)
        if key == FEATURES_URL and self._polling:
            self._polling = False
            self._on_poll(self._answered, self._reason or "no response")
        return value

    def observe_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """requests ``response`` hook: note the features endpoint's status."""
        if FEATURES_URL not in str(response.url):
            return
        if response.status_code in (200, 304):
            self._answered = True
        else:
            self._reason = f"HTTP {response.status_code} from {response.url}"

    def note_failure(self, reason: str) -> None:
        """Record why the current poll failed, unless a status already says why."""
        if self._polling and not self._reason:
            self._reason = reason


class QuietPollFailures(logging.Filter):
    """Demotes the SDK's per-poll failure records to DEBUG and hands their reason on.

    UnleashClient logs an error with a traceback on every failed poll (every
    second with a short refresh interval); the decider logs one warning per
    outage instead. Attach to the ``UnleashClient`` logger while a server client
    runs; ``on_failure`` gets the failure's message.
    """

    _PREFIXES = (
        "Unleash Client feature fetch failed",
        "Unleash Client registration failed",
        "Unleash Client metrics submission",
    )

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        super().__init__()
        self._on_failure = on_failure

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith(self._PREFIXES):
            return True
        if message.startswith(self._PREFIXES[0]):
            self._on_failure(record.getMessage())
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def embedded_client(raw: str, settings: FlagSettings) -> UnleashClient:
    """An initialized client evaluating the features in ``raw`` and nothing else.

    ``raw`` must already be validated (:func:`flags.toggles.parse_document`).
    Starts the client's scheduler thread: :meth:`UnleashClient.destroy` it.
    """
    cache = MemoryCache()
    cache.bootstrap_from_text(raw)
    client = UnleashClient(
        url=_NO_SERVER,
        app_name=settings.app_name,
        environment=settings.environment,
        refresh_interval=_EMBEDDED_RELOAD_SECONDS,
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        # A toggle missing from the file is normal here (it means "default").
        verbose_log_level=logging.DEBUG,
    )
    client.initialize_client(fetch_toggles=False)
    return client


def server_client(
    settings: FlagSettings,
    cache: PollingCache,
    on_event: Callable[[BaseEvent], None],
) -> UnleashClient:
    """A client for ``settings.unleash_url`` that starts from ``cache``'s features.

    Not initialized: ``initialize_client()`` registers and fetches once before it
    returns, so run it off the event loop. ``on_event`` gets the client's events
    on the client's event thread.
    """
    assert settings.unleash_url is not None
    headers = {"Authorization": settings.api_token} if settings.api_token else {}
    return UnleashClient(
        url=settings.unleash_url,
        app_name=settings.app_name,
        environment=settings.environment,
        instance_id=f"{socket.gethostname()}:{os.getpid()}",
        refresh_interval=settings.refresh_interval,
        request_timeout=settings.request_timeout,
        # The next poll is the retry; in-request retries only delay the
        # outage warning and log a urllib3 warning each.
        request_retries=0,
        disable_metrics=not settings.report_to_server,
        disable_registration=not settings.report_to_server,
        custom_headers=headers,
        custom_options={"hooks": {"response": [cache.observe_response]}},
        cache=cache,
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        verbose_log_level=logging.DEBUG,
        event_callback=on_event,
    )
