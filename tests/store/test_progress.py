"""The per-message progress record: read, recorded without ever moving a recipient backwards, kept or expiring."""

from __future__ import annotations

from services.store import Store
from services.store import progress as states
from shared.queue_id import new_queue_id
from tests.redis_cluster import RedisClusterProcesses


def test_which_states_a_delivery_leaves_alone() -> None:
    for final in (states.STORED, states.DUPLICATE, states.RELAYED, states.BOUNCED):
        assert states.settled(final, 0) and states.settled(final, 7)
    # deferred:N: the retry copy of attempt N carries the recipient; that copy itself (attempt N) must deliver it.
    assert states.settled(states.deferred(1), 0)
    assert not states.settled(states.deferred(1), 1)
    assert not states.settled(states.deferred(1), 2)
    assert not states.settled("deferred:junk", 0)


async def test_record_and_read(store: Store) -> None:
    queue_id = new_queue_id()
    assert await store.progress.read(queue_id) == {}
    await store.progress.record(queue_id, {"a@x.test": states.RELAYED, "b@x.test": states.deferred(1)})
    assert await store.progress.read(queue_id) == {"a@x.test": "relayed", "b@x.test": "deferred:1"}
    assert store.keys.progress(queue_id).endswith(f"{{{queue_id}}}")  # one hash slot per queue message


async def test_a_recipient_never_moves_backwards(store: Store) -> None:
    queue_id = new_queue_id()
    await store.progress.record(queue_id, {"a@x.test": states.RELAYED, "b@x.test": states.deferred(2)})
    # A late write from an older delivery (a duplicate retry copy, a redelivery) changes nothing...
    await store.progress.record(queue_id, {"a@x.test": states.deferred(1), "b@x.test": states.deferred(1)})
    assert await store.progress.read(queue_id) == {"a@x.test": "relayed", "b@x.test": "deferred:2"}
    # ...a later attempt or a final outcome does; a final one is never replaced.
    await store.progress.record(queue_id, {"b@x.test": states.deferred(3)})
    assert (await store.progress.read(queue_id))["b@x.test"] == "deferred:3"
    await store.progress.record(queue_id, {"b@x.test": states.BOUNCED})
    await store.progress.record(queue_id, {"b@x.test": states.RELAYED})
    assert (await store.progress.read(queue_id))["b@x.test"] == "bounced"


async def test_kept_without_a_ttl_until_finished(store: Store) -> None:
    queue_id = new_queue_id()
    key = store.keys.progress(queue_id)
    await store.progress.record(queue_id, {"a@x.test": states.STORED})
    assert 0 < await store.redis.ttl(key) <= store.progress.ttl
    await store.progress.record(queue_id, {}, keep=True)  # handed back to the broker: may come back any time
    assert await store.redis.ttl(key) == -1
    await store.progress.record(queue_id, {"b@x.test": states.BOUNCED}, keep=True)
    assert await store.redis.ttl(key) == -1
    await store.progress.record(queue_id, {})  # finished
    assert 0 < await store.redis.ttl(key) <= store.progress.ttl
    assert store.progress.ttl == store.mailboxes.dedup_ttl


async def test_on_a_redis_cluster(namespace: str, redis_cluster: RedisClusterProcesses) -> None:
    """One key per call, hash-tagged by queue id: the script runs on a cluster as on one Redis."""
    store = Store.connect(redis_cluster.url, namespace, cluster=True)
    try:
        queue_id = new_queue_id()
        await store.progress.record(queue_id, {"a@x.test": states.RELAYED}, keep=True)
        await store.progress.record(queue_id, {"a@x.test": states.deferred(1), "b@x.test": states.BOUNCED})
        assert await store.progress.read(queue_id) == {"a@x.test": "relayed", "b@x.test": "bounced"}
        await store.redis.delete(store.keys.progress(queue_id))
    finally:
        await store.close()
