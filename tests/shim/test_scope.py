"""run_eagerly: the legacy side of another worker's event, run in the fan-out step."""

from __future__ import annotations

import asyncio

from shim.scope import run_eagerly


async def test_a_coroutine_that_never_suspends_finishes_in_the_call() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("quick")

    assert run_eagerly(quick()) is None
    assert done == ["quick"]


async def test_one_that_suspends_is_finished_by_a_task_with_results_and_errors() -> None:
    done: list[object] = []
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        done.append("before")
        await asyncio.sleep(0)
        done.append(await future)
        try:
            await _fail()
        except RuntimeError as error:
            done.append(str(error))

    task = run_eagerly(slow())
    assert task is not None and done == ["before"]
    future.set_result(7)
    await asyncio.wait_for(task, 2)
    assert done == ["before", 7, "raised into it"]


async def _fail() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("raised into it")
