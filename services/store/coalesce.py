"""Round trips shared by concurrent callers: what they ask while one pipeline is in flight goes out in the next."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

# Queues an operation's commands on a pipeline and returns how many it queued.
Commands = Callable[[Any], int]


async def round_trip(redis: Any, coalescer: Coalescer | None, commands: Commands) -> list[Any]:
    """The replies to `commands(pipe)` in one round trip, errors in their place: shared with concurrent callers
    through `coalescer` when there is one, else an own non-transactional pipeline."""
    if coalescer is not None:
        return await coalescer.run(commands)
    async with redis.pipeline(transaction=False) as pipe:
        commands(pipe)
        return list(await pipe.execute(raise_on_error=False))


class Coalescer:
    """One task sends every queued operation in one non-transactional pipeline, and again as soon as that pipeline
    has answered and the callers it answered have taken their next step: a lone caller waits one round trip, as with
    its own pipeline, and under load many callers share one (no timer). Each operation gets its own replies, errors
    in their place; a failure of the whole pipeline (connection lost, timeout) is raised to every operation in it.

    Only for commands whose result needs no atomicity across operations: each operation's commands are sent in
    order, but other operations' commands may run between them.

    `timeout` bounds each whole round trip, for a client without a socket timeout of its own (shared.connections.
    untimed): one timer per round trip instead of redis-py's timer per reply and task per send.
    """

    def __init__(self, redis: Any, timeout: float | None = None) -> None:
        self.redis = redis
        self.timeout = timeout
        self._pending: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def run(self, commands: Commands) -> list[Any]:
        """The replies to the commands `commands(pipe)` queued, in order (an error reply is an exception object)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((commands, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_pending())
        return await future

    async def _send_pending(self) -> None:
        batch: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        try:
            while self._pending:
                batch, self._pending = [op for op in self._pending if not op[1].done()], []
                if batch:
                    await self._send(batch)
                    # The callers it answered take their next step before the next round trip goes: what one of them
                    # asks at once (the delivery's store after its lookup) joins it instead of the one after.
                    await asyncio.sleep(0)
        except BaseException as exc:
            # Cancelled (shutdown) or a bug: no caller may wait for ever.
            error = exc if isinstance(exc, Exception) else ConnectionError("round trip cancelled")
            for _, future in (*batch, *self._pending):
                if not future.done():
                    future.set_exception(_own_copy(error))
            self._pending = []
            raise
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[Commands, asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                counts = [commands(pipe) for commands, _ in batch]
                if self.timeout is None:
                    replies = await pipe.execute(raise_on_error=False)
                else:
                    # Cut short, redis-py drops the connection it was reading from, so no late reply is misread.
                    try:
                        async with asyncio.timeout(self.timeout):
                            replies = await pipe.execute(raise_on_error=False)
                    except TimeoutError:
                        raise RedisTimeoutError(f"no reply within {self.timeout:g}s") from None
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(_own_copy(exc))
            return
        start = 0
        for count, (_, future) in zip(counts, batch, strict=True):
            if not future.done():
                future.set_result(replies[start : start + count])
            start += count


def _own_copy(exc: Exception) -> Exception:
    """A copy for one caller: each caller raises it, and one shared instance would collect all their tracebacks."""
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    clone.__cause__ = exc
    return clone
