"""InFlight.run: work runs at once, and becomes a task only when it waits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipreg.transport.base import InFlight

from .helpers import TIMEOUT


async def test_work_that_never_waits_runs_at_once_without_a_task() -> None:
    in_flight, done = InFlight(), []

    async def work() -> None:
        done.append("now")

    in_flight.run(work())
    assert done == ["now"] and len(in_flight) == 0


async def test_work_that_waits_becomes_a_task_and_finishes() -> None:
    in_flight, steps = InFlight(), []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield too
        steps.append("after")

    in_flight.run(work())
    assert steps == ["before"] and len(in_flight) == 1
    gate.set_result("woken")
    assert await in_flight.drain(TIMEOUT) == 0
    assert steps == ["before", "woken", "after"] and len(in_flight) == 0


async def test_a_waiting_work_is_cancelled_where_it_waits() -> None:
    in_flight, seen = InFlight(), []

    async def work() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # forever
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    in_flight.run(work())
    assert await in_flight.drain(0.01) == 1
    assert seen == ["cancelled"] and len(in_flight) == 0


@pytest.mark.parametrize("waits", [False, True])
async def test_an_error_is_logged_not_raised(waits: bool, caplog: pytest.LogCaptureFixture) -> None:
    in_flight = InFlight()

    async def work() -> None:
        if waits:
            await asyncio.sleep(0)
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, "sipreg.transport"):
        in_flight.run(work())
        await in_flight.drain(TIMEOUT)
    assert "handling a message failed" in caplog.text and "boom" in caplog.text
