"""A Redis that is up but refuses (read-only replica mid-failover, maxmemory with noeviction, too few replicas,
master link down, loading its data) is an outage, not a bad message: the delivery service defers the recipient
through the delay queue, says why in a metric and a log line, and stores the message once Redis accepts writes
again. Never the dead-letter queue. Each state is made on a private redis-server (tests/private_redis.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis

from services.store import Store
from tests.delivery.conftest import Broker, make_message, metric
from tests.harness import ServiceProcess
from tests.helpers import wait_until, wait_until_sync
from tests.redis_private import PrivateRedis

USER = "alice@example.test"


def refuse(server: PrivateRedis, state: str) -> None:
    if state == "readonly":
        server.replica_of_nobody()  # replica-read-only is on by default
    elif state == "oom":
        server.config_set("maxmemory-policy", "noeviction")
        server.config_set("maxmemory", 1)
    elif state == "noreplicas":
        server.config_set("min-replicas-to-write", 1)
    elif state == "masterdown":
        server.config_set("replica-serve-stale-data", "no")
        server.replica_of_nobody()


def recover(server: PrivateRedis, state: str) -> None:
    if state in ("readonly", "masterdown"):
        server.promote()
    elif state == "oom":
        server.config_set("maxmemory", 0)
    elif state == "noreplicas":
        server.config_set("min-replicas-to-write", 0)


@pytest.fixture
async def private_store(private_redis: PrivateRedis, namespace: str) -> AsyncIterator[Store]:
    handle = Store.connect(private_redis.url, namespace)
    await handle.accounts.add_domain("example.test")
    await handle.accounts.add_user(USER, "pw")
    yield handle
    await handle.close()


async def stored_once_after_recovery(
    worker: ServiceProcess, broker: Broker, store: Store, queue_id: str, reason: str
) -> None:
    async def stored() -> bool:
        try:
            return bool(await store.mailboxes.snapshot(USER))
        except redis.exceptions.RedisError:
            return False

    await wait_until(stored, timeout=60, what="stored once Redis takes writes again")

    async def drained() -> bool:
        depths = [await broker.depth(q) for q in (broker.topology.incoming, broker.topology.delay_queue(1))]
        return depths == [0, 0]

    await wait_until(drained, what="queues drained")
    assert [m.uid for m in await store.mailboxes.snapshot(USER)] == [queue_id]
    user = await store.accounts.get_user(USER)
    assert user is not None and user.messages == 1
    assert await broker.depth(broker.topology.dead) == 0
    assert f"reason={reason}" in worker.log()


@pytest.mark.parametrize("state", ["readonly", "oom", "noreplicas", "masterdown"])
async def test_a_refusing_store_defers_and_stores_once_after_it_recovers(
    state: str,
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    private_redis: PrivateRedis,
    private_store: Store,
) -> None:
    worker = start_service("delivery", POSTROOM_REDIS_URL=private_redis.url, POSTROOM_RETRY_SCHEDULE="1s")
    refuse(private_redis, state)
    envelope = await broker.publish([USER], make_message(f"while {state}"))
    series = f'postroom_delivery_store_errors_total{{reason="{state}"}}'

    async def deferred_twice() -> bool:  # deferred, and deferred again from the delay queue
        return metric(worker, series) >= 2

    await wait_until(deferred_twice, timeout=60, what=f"deferred for {state}, twice")
    assert await broker.depth(broker.topology.dead) == 0
    recover(private_redis, state)
    await stored_once_after_recovery(worker, broker, private_store, envelope.queue_id, state)


async def test_a_store_loading_its_data_defers_and_stores_once_loaded(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    private_redis: PrivateRedis,
    private_store: Store,
) -> None:
    """Restarted with a dataset that takes seconds to load (key-load-delay): every command answers LOADING."""
    private_redis.command("EVAL", "for i = 1, 2000 do redis.call('SET', 'filler:' .. i, i) end", 0)
    # Into the append-only file's RDB base, which is what key-load-delay slows down on the next start.
    private_redis.command("BGREWRITEAOF")

    def rewritten() -> bool:
        info = private_redis.command("INFO", "persistence")
        return bool(info["aof_rewrite_in_progress"] == 0 and info["aof_rewrite_scheduled"] == 0)

    wait_until_sync(rewritten, what="the append-only file rewritten")
    worker = start_service("delivery", POSTROOM_REDIS_URL=private_redis.url, POSTROOM_RETRY_SCHEDULE="1s")
    private_redis.stop()
    private_redis.start("--key-load-delay", "5000", "--loading-process-events-interval-bytes", "1024", wait=False)
    envelope = await broker.publish([USER], make_message("while loading"))
    series = 'postroom_delivery_store_errors_total{reason="loading"}'

    async def deferred() -> bool:
        return metric(worker, series) >= 1

    await wait_until(deferred, timeout=60, what="deferred while Redis loads")
    assert await broker.depth(broker.topology.dead) == 0
    await stored_once_after_recovery(worker, broker, private_store, envelope.queue_id, "loading")
