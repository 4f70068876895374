"""Who an old producer's broadcast is for, when the app runs as several workers.

An old-style backend has two kinds of producers, and with one worker they are
indistinguishable:

- triggered once, in whichever worker got the request or ran the job
  (``await manager.broadcast(...)`` in a request handler or a job callback):
  its event is for every client, whichever worker holds it (**cluster**);
- running in every worker (a loop each process starts at startup): each
  worker's copy is for that worker's own clients (**worker**).

The legacy manager only ever reaches its own worker's clients, while the new
side publishes through the broker to every worker. Unless the shim knows the
kind, a stage flip changes who receives an event: a once-triggered event that
reached every worker at ``new`` would reach one worker after a rollback, and a
per-worker loop's events would be multiplied by the number of workers at
``new``. :class:`ProducerScope` says which, per manager or per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from enum import StrEnum
from typing import Any

from service.connection import resume_stepped

__all__ = ["ProducerScope", "run_eagerly"]


class ProducerScope(StrEnum):
    """What one old-style ``manager.broadcast(payload)`` reaches, at every stage."""

    #: Every worker's clients, once: published through the broker, and each
    #: other worker runs its legacy side for its own legacy-routed clients.
    CLUSTER = "cluster"
    #: This worker's clients only (the legacy behaviour): delivered locally on
    #: both sides, never through the broker (no ``seq``: not replayed on resume).
    #: The default, because it never multiplies a per-worker loop's events.
    WORKER = "worker"


def run_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` now, synchronously, up to its first real suspension.

    The legacy side of another worker's event runs inside the broker's fan-out
    callback, which cannot await: the app manager's ``broadcast`` only queues on
    each client's writer and normally finishes without suspending, so the old
    and new halves of one event happen in the same step, with no stage flip in
    between. Returns None when it finished; otherwise a task that finishes it
    (the app's manager awaited something real, e.g. a lock of its own).
    """
    try:
        suspended_on = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return asyncio.get_running_loop().create_task(_finish(coro, suspended_on))


async def _finish(coro: Coroutine[Any, Any, None], suspended_on: Any) -> None:
    await resume_stepped(coro, suspended_on)
