"""cancel_and_wait: a background loop that loses a cancel still stops, and a shutdown is never held forever."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from services.smtp_ingress import publisher as publisher_module
from services.smtp_ingress.publisher import IngressPublisher
from shared.tasks import cancel_and_wait


async def reconnect_loop_that_loses_one_cancel(attempts: list[int], started: asyncio.Event) -> None:
    """The shape of a supervisor whose connect swallowed the cancel (asyncio.wait_for in 3.11, gh-86296)."""
    swallowed = False
    while True:
        attempts.append(1)
        started.set()
        try:
            await asyncio.Event().wait()  # a connect that never answers; only a cancel ends it
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True


async def test_a_lost_cancel_is_repeated_until_the_task_ends() -> None:
    attempts: list[int] = []
    started = asyncio.Event()
    task = asyncio.create_task(reconnect_loop_that_loses_one_cancel(attempts, started))
    await started.wait()
    assert await cancel_and_wait(task, timeout=30)
    assert task.cancelled()
    assert len(attempts) == 2


async def test_a_task_that_never_ends_is_given_up_after_the_timeout() -> None:
    release, running = asyncio.Event(), asyncio.Event()

    async def deaf() -> None:
        running.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(deaf())
    await running.wait()
    assert not await cancel_and_wait(task, timeout=0.3)
    release.set()
    await task


async def test_the_error_of_a_failed_task_is_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    assert await cancel_and_wait(task)


async def test_publisher_stops_when_its_connect_swallows_the_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CI hang of stop 10: the supervisor kept reconnecting after stop() had cancelled it once."""
    connects: list[int] = []
    connecting = asyncio.Event()

    async def connect(*_: Any, **__: Any) -> Any:
        connects.append(1)
        connecting.set()
        try:
            await asyncio.Event().wait()  # a connect that never answers; only a cancel ends it
        except asyncio.CancelledError:
            if len(connects) > 1:
                raise
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(publisher_module, "connect_amqp_once", connect)
    monkeypatch.setattr(publisher_module, "RECONNECT_MIN", 0)
    publisher = IngressPublisher("amqp://guest:guest@127.0.0.1:1/", "tasks-test", timeout=1)
    publisher.start()
    await connecting.wait()
    stopping = asyncio.create_task(publisher.stop())
    await asyncio.wait({stopping}, timeout=30)
    assert stopping.done(), "stop() is held by a supervisor that lost its cancel"
    assert publisher._task is not None and publisher._task.done()
    assert not publisher.ready
