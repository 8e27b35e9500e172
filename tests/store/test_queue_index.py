"""The queue index's scripts on real Redis and on a Redis Cluster (one slot per message: entry and progress)."""

from __future__ import annotations

from services.store import Store
from services.store import queue_index as states
from shared.queue_id import new_queue_id
from tests.redis_cluster import RedisClusterProcesses

FIELDS: dict[str, str | int | float] = {
    "sender": "s@x.test",
    "recipients": '["a@x.test", "b@x.test"]',
    "arrival": 1.0,
    "next_attempt": 2e9,
    "attempts": 1,
}


async def exercise(store: Store) -> None:
    queue_id = new_queue_id()
    await store.queue.record(queue_id, {"a@x.test": "deferred:1"}, False, "defer", FIELDS)
    assert (await store.queue.claim(queue_id)).state == states.DEFERRED
    assert [(e.queue_id, e.state) for e in await store.queue.entries()] == [(queue_id, states.ACTIVE)]
    await store.queue.record(queue_id, {}, False, "idle")
    assert (await store.queue.get(queue_id)).state == states.DEFERRED  # type: ignore[union-attr]
    assert await store.queue.set_state(queue_id, states.HELD, (states.DEFERRED,)) == 1
    assert await store.queue.set_state(queue_id, states.DEFERRED, (states.ACTIVE,)) == -1
    # A delivery's write while held keeps the operator's state.
    await store.queue.record(queue_id, {}, False, "defer", {**FIELDS, "attempts": 2})
    assert (await store.queue.get(queue_id)).state == states.HELD  # type: ignore[union-attr]
    assert await store.queue.delete(queue_id, bounce=False)
    assert await store.progress.read(queue_id) == {"a@x.test": "deleted", "b@x.test": "deleted"}
    assert await store.queue.get(queue_id) is None and await store.queue.entries() == []
    assert not await store.queue.delete(queue_id, bounce=False)
    assert await store.queue.set_state(queue_id, states.HELD, (states.DEFERRED,)) == 0
    await store.redis.delete(store.keys.progress(queue_id))


async def test_the_scripts(store: Store) -> None:
    await exercise(store)


async def test_on_a_redis_cluster(namespace: str, redis_cluster: RedisClusterProcesses) -> None:
    store = Store.connect(redis_cluster.url, namespace, cluster=True)
    try:
        await exercise(store)
    finally:
        await store.close()
