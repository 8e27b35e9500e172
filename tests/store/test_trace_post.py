"""Posted trace events: written in the background, coalesced into shared round trips, bounded, never raising."""

from __future__ import annotations

import asyncio
from typing import Any

from services.store import Store
from services.store.trace import Trace
from shared.queue_id import new_queue_id
from tests.helpers import wait_until


class CountingTrace(Trace):
    """Counts the pipelines written and can hold the first one until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.writing = asyncio.Event()

    async def _write(self, batch: list[tuple[str, list[str]]]) -> None:
        self.writes += 1
        self.writing.set()
        await self.hold.wait()
        await super()._write(batch)


async def events_of(store: Store, queue_id: str) -> list[str]:
    return [e["event"] for e in await store.trace.events(queue_id)]


async def test_posts_during_a_write_share_the_next_round_trip_in_order(store: Store) -> None:
    trace = CountingTrace(store.redis, store.namespace)
    trace.hold.clear()
    first = new_queue_id()
    trace.post(first, "delivery", [("attempt", {"n": 0})])
    await asyncio.wait_for(trace.writing.wait(), 5)
    queue_ids = [new_queue_id() for _ in range(50)]
    for n, queue_id in enumerate(queue_ids):
        trace.post(queue_id, "delivery", [("attempt", {"n": n}), ("stored", {"n": n})])
    trace.post(first, "delivery", [("stored", {"n": 0})])
    trace.hold.set()
    await trace.close()
    assert trace.writes == 2  # the first event alone, then everything posted while it was being written
    assert await events_of(store, first) == ["attempt", "stored"]
    for queue_id in queue_ids:
        assert await events_of(store, queue_id) == ["attempt", "stored"]
    assert trace.dropped == 0
    assert int(await store.redis.get(store.keys.trace_events)) == 2 + 2 * 50


async def test_an_idle_writer_writes_at_once(store: Store) -> None:
    queue_id = new_queue_id()
    store.trace.post(queue_id, "smtp", [("accepted", {"size": 1}), ("queued", {})])

    async def written() -> bool:
        return await events_of(store, queue_id) == ["accepted", "queued"]

    await wait_until(written, what="posted events written without a close")


async def test_pending_events_are_bounded_and_dropped_when_full(store: Store) -> None:
    trace = CountingTrace(store.redis, store.namespace, max_pending=3)
    trace.hold.clear()
    queue_id = new_queue_id()
    trace.post(queue_id, "delivery", [("attempt", {})])  # taken by the writer at once, not pending
    await asyncio.wait_for(trace.writing.wait(), 5)
    trace.post(queue_id, "delivery", [("a", {}), ("b", {})])
    trace.post(queue_id, "delivery", [("c", {}), ("d", {})])  # 4 > 3 pending: dropped whole
    trace.post(queue_id, "delivery", [("e", {})])
    assert trace.dropped == 2
    trace.hold.set()
    await trace.close()
    assert await events_of(store, queue_id) == ["attempt", "a", "b", "e"]
    trace.post(queue_id, "delivery", [("late", {})])  # after close: dropped, no task left behind
    assert trace.dropped == 3


async def test_unreachable_redis_drops_and_counts_never_raises(namespace: str) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    down = Store.connect(f"redis://127.0.0.1:{port}/0", namespace, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        for _ in range(3):
            down.trace.post(new_queue_id(), "delivery", [("attempt", {}), ("stored", {})])
        await down.trace.close()
        assert down.trace.dropped == 6
    finally:
        await down.close()


async def test_close_gives_up_on_a_hanging_redis(namespace: str) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts and never answers
    port = server.sockets[0].getsockname()[1]
    hanging = Store.connect(f"redis://127.0.0.1:{port}/0", namespace, socket_timeout=60)
    try:
        hanging.trace.post(new_queue_id(), "delivery", [("attempt", {})])
        hanging.trace.post(new_queue_id(), "delivery", [("stored", {})])
        await hanging.trace.close(timeout=0.2)
        assert hanging.trace.dropped == 2
    finally:
        server.close()
        await hanging.close()
