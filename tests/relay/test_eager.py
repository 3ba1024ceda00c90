"""``relay.eager``: a coroutine run on the caller's stack, and finished by a task if it waits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relay.eager import _resuming, run_eagerly
from tests.peers import wait_until


async def test_a_handler_that_never_waits_runs_on_the_callers_stack() -> None:
    ran: list[int] = []

    async def handler() -> None:
        ran.append(1)

    run_eagerly(handler())
    assert ran == [1]


async def test_a_handler_that_waits_is_finished_by_a_task() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    results: list[int] = []

    async def handler() -> None:
        results.append(await future)
        await asyncio.sleep(0)
        results.append(await asyncio.sleep(0.01, result=8))

    run_eagerly(handler())
    assert results == []
    future.set_result(7)
    assert await wait_until(lambda: results == [7, 8], timeout=2), results


async def test_cancelling_a_suspended_handler_cancels_what_it_waits_for() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def handler() -> None:
        try:
            await future
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    run_eagerly(handler())
    (task,) = _resuming
    await asyncio.sleep(0)  # the task waits for the future now
    task.cancel()
    await asyncio.wait((task,))
    assert task.cancelled() and future.cancelled() and seen == ["cancelled"]
    assert not _resuming


async def test_a_handler_that_fails_is_logged_not_raised_into_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    async def failing_later() -> None:
        await future
        raise ValueError("garbled")

    async def failing_now() -> None:
        raise ValueError("garbled")

    with caplog.at_level(logging.WARNING, logger="relay.eager"):
        run_eagerly(failing_later())
        future.set_result(None)
        assert await wait_until(lambda: "could not be handled" in caplog.text, timeout=2)
    assert "ValueError: garbled" in caplog.text
    assert "Traceback" not in caplog.text
    with pytest.raises(ValueError):
        run_eagerly(failing_now())  # to the caller: InboundRtp catches it, before asyncio would
