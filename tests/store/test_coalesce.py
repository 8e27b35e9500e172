"""Coalesced round trips (the delivery's lookups and stores), against a single Redis and a Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.store import Store, StoreOutcome
from services.store.coalesce import Coalescer
from services.store.outage import outage
from shared.queue_id import new_queue_id
from tests.helpers import REDIS_URL, wait_until


class HeldCoalescer(Coalescer):
    """Counts the pipelines sent and holds the first one until released."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self.sent = 0
        self.release = asyncio.Event()
        self.sending = asyncio.Event()

    async def _send(self, batch: Any) -> None:
        self.sent += 1
        self.sending.set()
        await self.release.wait()
        await super()._send(batch)


def getter(key: str) -> Any:
    def commands(pipe: Any) -> int:
        pipe.get(key)
        pipe.strlen(key)
        return 2

    return commands


async def test_callers_waiting_on_a_round_trip_share_the_next_one(store: Store) -> None:
    keys = [f"{store.namespace}:coalesce:{n}" for n in range(20)]
    for n, key in enumerate(keys):
        await store.redis.set(key, b"v" * n)
    coalescer = HeldCoalescer(store.redis)
    first = asyncio.create_task(coalescer.run(getter(keys[0])))
    await asyncio.wait_for(coalescer.sending.wait(), 5)
    others = [asyncio.create_task(coalescer.run(getter(key))) for key in keys[1:]]
    coalescer.release.set()  # the waiting tasks queue their commands before the held sender resumes (FIFO)
    assert await first == [b"", 0]
    assert await asyncio.gather(*others) == [[b"v" * n, n] for n in range(1, 20)]
    assert coalescer.sent == 2  # the first caller alone, then the nineteen that came while it was in flight


async def test_an_error_reply_stays_with_its_caller(store: Store) -> None:
    text = f"{store.namespace}:coalesce:text"
    await store.redis.set(text, b"x")

    def wrong_type(pipe: Any) -> int:
        pipe.hget(text, "field")
        return 1

    coalescer = Coalescer(store.redis)
    bad, good = await asyncio.gather(coalescer.run(wrong_type), coalescer.run(getter(text)))
    assert isinstance(bad[0], ResponseError) and good == [b"x", 1]


async def test_a_lost_connection_fails_every_caller(namespace: str) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    down = Store.connect(f"redis://127.0.0.1:{port}/0", namespace, socket_connect_timeout=0.5)
    try:
        coalescer = Coalescer(down.redis)
        results = await asyncio.gather(*(coalescer.run(getter("k")) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
        assert len({id(r) for r in results}) == 5  # each caller raises its own copy
    finally:
        await down.close()


async def test_a_cancelled_sender_leaves_no_caller_waiting(store: Store) -> None:
    coalescer = HeldCoalescer(store.redis)
    callers = [asyncio.create_task(coalescer.run(getter("k"))) for _ in range(3)]
    await asyncio.wait_for(coalescer.sending.wait(), 5)
    late = asyncio.create_task(coalescer.run(getter("k")))
    assert coalescer._sender is not None
    coalescer._sender.cancel()
    results = await asyncio.wait_for(asyncio.gather(*callers, late, return_exceptions=True), 5)
    assert all(isinstance(r, ConnectionError) for r in results)


@pytest.fixture
def coalesced(store: Store) -> Store:
    """The delivery's kind of store, on the test's client."""
    return Store(store.redis, store.namespace, coalesce=True)


async def test_coalesced_lookups_and_stores(coalesced: Store) -> None:
    await coalesced.accounts.add_domain("example.test")
    for user in ("a", "b", "c"):
        await coalesced.accounts.add_user(f"{user}@example.test", "pw")
    await coalesced.accounts.add_alias("team@example.test", ["a@example.test", "b@example.test"])
    facts = await asyncio.gather(
        *(coalesced.accounts.lookup(a) for a in ("a@example.test", "team@example.test", "x@remote.test"))
    )
    assert [(f.local_domain, f.user, f.aliases) for f in facts] == [
        (True, True, None),
        (True, False, ["a@example.test", "b@example.test"]),
        (False, False, None),
    ]
    queue_ids = [new_queue_id() for _ in range(10)]
    stores = [coalesced.mailboxes.deliver_many(["a@example.test", "c@example.test"], q, b"m\r\n") for q in queue_ids]
    stores.append(coalesced.mailboxes.deliver_many(["b@example.test"], queue_ids[0], b"m\r\n"))
    results = await asyncio.gather(*stores)
    assert results == [[StoreOutcome.STORED, StoreOutcome.STORED]] * 10 + [[StoreOutcome.STORED]]
    again = await coalesced.mailboxes.deliver_many(["a@example.test", "b@example.test"], queue_ids[0], b"m\r\n")
    assert again == [StoreOutcome.DUPLICATE, StoreOutcome.DUPLICATE]
    assert [len(await coalesced.mailboxes.snapshot(f"{u}@example.test")) for u in "abc"] == [10, 1, 10]


async def test_coalesced_trace_writes_share_the_round_trips_of_stores(coalesced: Store) -> None:
    await coalesced.accounts.add_domain("example.test")
    await coalesced.accounts.add_user("a@example.test", "pw")
    queue_ids = [new_queue_id() for _ in range(5)]

    async def deliver(queue_id: str) -> None:
        assert await coalesced.mailboxes.deliver_many(["a@example.test"], queue_id, b"m\r\n") == [StoreOutcome.STORED]
        coalesced.trace.post(queue_id, "delivery", [("attempt", {}), ("stored", {})])

    await asyncio.gather(*(deliver(q) for q in queue_ids))
    await coalesced.trace.close()
    for queue_id in queue_ids:
        assert [e["event"] for e in await coalesced.trace.events(queue_id)] == ["attempt", "stored"]
    assert coalesced.trace.dropped == 0


async def test_a_coalescing_store_adds_one_connection_to_redis(namespace: str) -> None:
    """Its untimed client carries one round trip at a time, on a pool of one connection beside the main pool."""
    coalesced = Store.connect(REDIS_URL, namespace, coalesce=True, socket_timeout=5)
    try:
        facts = await asyncio.gather(*(coalesced.accounts.lookup(f"u{n}@example.test") for n in range(200)))
        assert [f.local_domain for f in facts] == [False] * 200
        untimed_pool = coalesced._untimed.connection_pool
        assert untimed_pool is not coalesced.redis.connection_pool
        assert untimed_pool.max_connections == 1  # and 200 callers at once were served through it
    finally:
        await coalesced.close()


async def test_a_silent_server_times_the_round_trip_out(namespace: str) -> None:
    """The delivery's store (a socket timeout, coalesced): its round trips read without redis-py's timeout per reply,
    under one deadline for the whole round trip; a server that never answers fails them as a store timeout."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = Store.connect(f"redis://127.0.0.1:{port}/0", namespace, coalesce=True, socket_timeout=0.3)
    try:
        results = await asyncio.gather(
            *(silent.accounts.lookup(f"u{n}@example.test") for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RedisTimeoutError) and outage(r) == "timeout" for r in results)
    finally:
        await silent.close()
        server.close()
        await server.wait_closed()


async def test_an_operation_asked_on_an_answer_joins_the_next_round_trip(store: Store) -> None:
    """A caller that asks again as soon as it is answered (the delivery's store after its lookup) shares the next
    round trip with the callers that were waiting, rather than taking one more of its own."""
    coalescer = HeldCoalescer(store.redis)

    async def lookup_then_store() -> list[Any]:
        await coalescer.run(getter("a"))
        return await coalescer.run(getter("b"))

    first = asyncio.create_task(lookup_then_store())
    await asyncio.wait_for(coalescer.sending.wait(), 5)
    other = asyncio.create_task(coalescer.run(getter("c")))

    async def queued() -> bool:
        return len(coalescer._pending) == 1

    await wait_until(queued)
    coalescer.release.set()
    assert await first == [None, 0] and await other == [None, 0]
    assert coalescer.sent == 2  # the first lookup alone, then the other caller's read with the second one
