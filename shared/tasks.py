"""Stopping a background task for sure, even when one of its awaits swallows the cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.logging import get_logger

log = get_logger(__name__)

# Python 3.11's asyncio.wait_for returns the inner result instead of raising CancelledError when the inner
# future finishes in the same loop iteration as the cancel (gh-86296); aiormq and aio-pika await through it.
# A reconnect loop that loses its cancel that way would run forever and hold a shutdown, so the cancel is
# repeated until the task has ended, within a deadline.
RECANCEL_INTERVAL = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], timeout: float = 10.0) -> bool:
    """Cancel `task` until it has ended or `timeout` passed; True if it ended. Never raises the task's error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("task did not stop", task=task.get_name(), timeout=timeout)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_INTERVAL, remaining))
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
    return True
