"""``UnleashStageDecider``: the shim's :class:`~shim.stages.StageDecider` from Unleash.

Lifecycle: construct with :class:`~flags.config.FlagSettings`, ``await start()``
inside the app's event loop, ``await stop()`` on shutdown. ``decide`` and
``add_listener`` work at any time: before ``start`` (and with no usable
toggles) every connection gets the default stage, or the override.

Threads: UnleashClient fetches and reports in its own scheduler thread and
delivers events on its own event thread; everything they tell the decider hops
to the event loop with ``call_soon_threadsafe``, so listeners, logging of state
changes and all of the decider's own state live on the loop. Building and
destroying clients runs in worker threads; nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import structlog
from UnleashClient.clients.unleash_client import UnleashClient
from UnleashClient.events import BaseEvent, UnleashEventType, UnleashFetchedEvent

from shim.stages import ChangeListener, RoutingDecision

from .client import PollingCache, QuietPollFailures, embedded_client, server_client
from .config import PACKAGED_TOGGLES_FILE, FlagSettings
from .edit import kill_switch_on
from .errors import ToggleFileError
from .files import FileWatch, create_if_missing
from .resolve import resolve_stage
from .status import StageSplit, effective_stages
from .toggles import check_document, parse_document, toggles_digest

__all__ = ["UnleashStageDecider"]

_log = structlog.get_logger("flags")
_EMPTY = '{"version": 2, "features": []}'


class UnleashStageDecider:
    """Decides each connection's stage from Unleash toggles.

    Embedded mode (``settings.unleash_url`` is ``None``): toggles come from
    ``settings.toggles_file``, polled every ``watch_interval`` seconds; a valid
    edit takes effect and notifies listeners, a malformed one is logged as an
    error and the previous toggles stay in force. No network access at all.

    Server mode: the client polls the server every ``refresh_interval`` seconds,
    starting from the toggles file as bootstrap. While the server is unreachable
    the last fetched toggles (else the bootstrap) stay in force and one warning
    is logged per outage. Listeners are notified when a fetch changes the stage
    or kill-switch toggle.
    """

    def __init__(self, *, settings: FlagSettings) -> None:
        self.settings = settings
        self._names = (settings.stage_toggle, settings.kill_switch_toggle)
        self._client: UnleashClient | None = None
        self._listeners: list[ChangeListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch = FileWatch(settings.toggles_file)
        self._file_problem: str | None = None
        self._quiet: QuietPollFailures | None = None
        self._digest = ""  # of the toggles in force, written by the event thread
        # False while the kill switch is absent or disabled in the toggles in force:
        # then it is off whatever the context, and decide() skips evaluating it.
        self._kill_armed = False
        self._fetched = False
        self._outage_since: float | None = None
        self._reachable: bool | None = None

    # -- StageDecider ------------------------------------------------------------

    def decide(
        self, endpoint: str, stickiness_key: str, context: Mapping[str, str]
    ) -> RoutingDecision:
        """The stage for a connection: override > kill switch > variant > default.

        The stickiness key goes in as ``sessionId``: rollouts with ``default``
        stickiness hash ``userId`` when the context has one, else this key. Does
        no I/O: one local engine evaluation, two while the kill switch is enabled.
        """
        override = self.settings.force_stage
        client = self._client
        if override is not None or client is None:
            return resolve_stage(
                override=override,
                kill_switch=False,
                variant=None,
                default=self.settings.default_stage,
            )
        unleash_context = {**context, "endpoint": endpoint, "sessionId": stickiness_key}
        kill = self._kill_armed and client.is_enabled(
            self.settings.kill_switch_toggle, unleash_context
        )
        variant = None if kill else client.get_variant(self.settings.stage_toggle, unleash_context)
        return resolve_stage(
            override=None, kill_switch=kill, variant=variant, default=self.settings.default_stage
        )

    def add_listener(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on the event loop after the toggles changed.

        Returns a function that removes it (calling it twice is harmless).
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- lifecycle -----------------------------------------------------------------

    @property
    def reachable(self) -> bool | None:
        """Whether the last poll reached the server; ``None`` embedded or before it."""
        return self._reachable

    async def start(self) -> None:
        """Load the toggles and begin watching the file or polling the server.

        Embedded: returns once the file is loaded (or rejected, which is logged).
        Server: returns after the first fetch, or after ``start_timeout`` seconds
        with the bootstrap toggles in force while the client keeps trying.
        With ``settings.create_missing`` a missing toggles file is first created
        from the packaged document (a failure to create it is logged; the file
        is then reported missing as usual).
        Raises what ``UnleashClient.initialize_client`` raises for an unusable URL.
        """
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.settings.create_missing:
            await asyncio.to_thread(self._create_missing)
        if self.settings.mode == "server":
            try:
                await self._start_server()
            except BaseException:
                await self.stop()
                raise
            return
        await self._check_file()
        if self.settings.watch_interval is not None:
            self._watch_task = self._loop.create_task(
                self._watch_file(self.settings.watch_interval)
            )

    async def stop(self) -> None:
        """Stop watching or polling. The toggles in force keep deciding afterwards."""
        if self._loop is None:
            return
        self._loop = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._client is not None:
            await asyncio.to_thread(self._client.destroy)
        if self._quiet is not None:
            logging.getLogger("UnleashClient").removeFilter(self._quiet)
            self._quiet = None

    def effective_stages(
        self, endpoints: Iterable[str], *, sample_keys: int = 1000
    ) -> dict[str, StageSplit]:
        """The stage split per endpoint over ``sample_keys`` synthetic connections."""
        return effective_stages(self, endpoints, sample_keys=sample_keys)

    def _create_missing(self) -> None:
        path = self.settings.toggles_file
        try:
            if create_if_missing(path, PACKAGED_TOGGLES_FILE):
                _log.info("flags_file_created", path=str(path), seed=str(PACKAGED_TOGGLES_FILE))
        except OSError as exc:
            _log.warning("flags_file_not_created", path=str(path), error=str(exc))

    # -- embedded mode -------------------------------------------------------------

    async def _watch_file(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._check_file()
            except Exception:  # the watch must outlive any surprise
                _log.exception("flags_watch_failed", path=str(self.settings.toggles_file))

    async def _check_file(self) -> None:
        path = str(self.settings.toggles_file)
        try:
            raw = self._watch.poll()
        except OSError as exc:
            self._file_rejected(path, [f"cannot read: {exc.strerror or exc}"])
            return
        if raw is None:
            return
        try:
            client, armed = await asyncio.to_thread(self._embedded_client, raw)
        except ToggleFileError as exc:
            self._file_rejected(path, exc.problems)
            return
        old, self._client, self._kill_armed = self._client, client, armed
        self._file_problem = None
        _log.info("flags_loaded", path=path, source="file")
        if old is not None:
            await asyncio.to_thread(old.destroy)
        self._notify()

    def _embedded_client(self, raw: bytes) -> tuple[UnleashClient, bool]:
        path = str(self.settings.toggles_file)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToggleFileError(path, [f"not UTF-8: {exc}"]) from None
        doc = parse_document(text, source=path, stage_toggle=self.settings.stage_toggle)
        armed = kill_switch_on(doc, toggle=self.settings.kill_switch_toggle)
        return embedded_client(text, self.settings), armed

    def _file_rejected(self, path: str, problems: list[str]) -> None:
        message = "; ".join(problems)
        if message == self._file_problem:
            return
        self._file_problem = message
        _log.error(
            "flags_file_rejected",
            path=path,
            problems=problems,
            keeping="previous toggles" if self._client is not None else "default stage",
        )

    # -- server mode ---------------------------------------------------------------

    async def _start_server(self) -> None:
        assert self._loop is not None
        raw = await asyncio.to_thread(self._bootstrap_text)
        bootstrap = orjson.loads(raw)
        self._digest = toggles_digest(bootstrap, self._names)
        self._kill_armed = kill_switch_on(bootstrap, toggle=self.settings.kill_switch_toggle)
        cache = PollingCache(self._on_poll)
        cache.bootstrap_from_text(raw)
        # Process-wide on the SDK's logger, for as long as this decider polls.
        self._quiet = QuietPollFailures(cache.note_failure)
        logging.getLogger("UnleashClient").addFilter(self._quiet)
        self._client = server_client(self.settings, cache, self._on_event)
        started = self._loop.run_in_executor(None, self._client.initialize_client)
        done, _ = await asyncio.wait({started}, timeout=self.settings.start_timeout)
        if started in done:
            started.result()
        else:
            _log.warning(
                "unleash_start_slow",
                url=self.settings.unleash_url,
                waited=self.settings.start_timeout,
                keeping="bootstrap toggles",
            )

    def _bootstrap_text(self) -> str:
        path = self.settings.toggles_file
        try:
            text = path.read_text(encoding="utf-8")
            parse_document(text, source=str(path), stage_toggle=self.settings.stage_toggle)
        except (OSError, UnicodeDecodeError, ToggleFileError) as exc:
            _log.warning("flags_bootstrap_unusable", path=str(path), error=str(exc))
            return _EMPTY
        return text

    def _on_poll(self, answered: bool, reason: str) -> None:
        # The client's scheduler thread.
        self._call_soon(self._poll_result, answered, reason)

    def _on_event(self, event: BaseEvent) -> None:
        # The client's event thread, after the engine took the fetched state.
        if event.event_type is not UnleashEventType.FETCHED:
            return
        assert isinstance(event, UnleashFetchedEvent)
        doc: Any = orjson.loads(event.raw_features)
        digest = toggles_digest(doc, self._names)
        first, self._fetched = not self._fetched, True
        if digest == self._digest:
            return
        self._digest = digest
        ours = [f for f in doc.get("features", []) if f.get("name") in self._names]
        problems = check_document({"features": ours}, stage_toggle=self.settings.stage_toggle)
        armed = kill_switch_on(doc, toggle=self.settings.kill_switch_toggle)
        self._call_soon(self._server_changed, first, problems, armed)

    def _poll_result(self, answered: bool, reason: str) -> None:
        self._reachable = answered
        if answered and self._outage_since is not None:
            _log.info(
                "unleash_reachable",
                url=self.settings.unleash_url,
                outage_seconds=round(time.monotonic() - self._outage_since, 1),
            )
            self._outage_since = None
        elif not answered and self._outage_since is None:
            self._outage_since = time.monotonic()
            _log.warning(
                "unleash_unreachable",
                url=self.settings.unleash_url,
                reason=reason,
                keeping="last fetched toggles" if self._fetched else "bootstrap toggles",
            )

    def _server_changed(self, first: bool, problems: list[str], armed: bool) -> None:
        self._kill_armed = armed
        if problems:
            _log.warning(
                "unleash_toggles_suspicious", problems=problems, default=self.settings.default_stage
            )
        _log.info("flags_loaded", source="server", url=self.settings.unleash_url, first_fetch=first)
        self._notify()

    # -- shared --------------------------------------------------------------------

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, *args)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                _log.exception("flags_listener_failed", listener=repr(listener))
