"""Fault tests with hundreds of messages in flight: the worker SIGKILLed mid-stream, and Redis killed and
restarted (a redis-server of the test's own, AOF with appendfsync always) → every message stored exactly once.

These are the slowest delivery tests (a few seconds each); counts are kept to a few hundred messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from services.store import Store
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from tests.delivery.conftest import Broker, make_message, metric
from tests.harness import ServiceProcess
from tests.helpers import http_status, wait_until
from tests.redis_private import PrivateRedis

USERS = [f"user{i}@example.test" for i in range(5)]
MESSAGES = 250


async def publish_all(broker: Broker, count: int) -> dict[str, set[str]]:
    """Publish `count` messages, each to one or two of the users; returns user → expected queue ids."""
    expected: dict[str, set[str]] = {u: set() for u in USERS}
    for i in range(count):
        recipients = (USERS[i % 5],) if i % 3 else (USERS[i % 5], USERS[(i + 1) % 5])
        envelope = Envelope(new_queue_id(), "sender@remote.test", recipients)
        await broker.publish_envelope(envelope, make_message(f"m{i}", body=f"message {i}\r\n"))
        for r in recipients:
            expected[r].add(envelope.queue_id)
    return expected


async def stored_count(store: Store) -> int:
    total = 0
    for user in USERS:
        found = await store.accounts.get_user(user)
        total += found.messages if found else 0
    return total


async def assert_exactly_once(store: Store, expected: dict[str, set[str]]) -> None:
    for user, queue_ids in expected.items():
        uids = [m.uid for m in await store.mailboxes.snapshot(user)]
        assert len(uids) == len(set(uids)), f"duplicates in {user}"
        assert set(uids) == queue_ids, (
            f"{user}: missing {len(queue_ids - set(uids))}, extra {len(set(uids) - queue_ids)}"
        )


async def add_users(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    for user in USERS:
        await store.accounts.add_user(user, "pw")


async def test_worker_sigkilled_mid_stream_loses_and_doubles_nothing(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store
) -> None:
    await add_users(store)
    env = {
        "POSTROOM_RETRY_SCHEDULE": "1s,2s",
        "POSTROOM_DELIVERY_PREFETCH": "100",
        "POSTROOM_DELIVERY_CONCURRENCY": "32",
    }
    expected = await publish_all(broker, MESSAGES)
    total = sum(len(ids) for ids in expected.values())
    kills = []
    for threshold in (total // 4, total // 2):
        worker = start_service("delivery", **env)

        async def progressed(threshold: int = threshold) -> bool:
            return await stored_count(store) >= threshold

        await wait_until(progressed, what=f"{threshold} stored")
        worker.kill()
        kills.append(await stored_count(store))
    start_service("delivery", **env)

    async def all_stored() -> bool:
        return await stored_count(store) >= total

    await wait_until(all_stored, timeout=60, what="every message stored")

    async def drained() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(drained, what="incoming drained")
    await assert_exactly_once(store, expected)
    assert await stored_count(store) == total
    assert kills[0] < total, "the first kill should land mid-stream"


@pytest.fixture
async def own_store(private_redis: PrivateRedis, namespace: str) -> AsyncIterator[Store]:
    handle = Store.connect(private_redis.url, namespace)
    yield handle
    await handle.close()


async def test_redis_killed_and_restarted_loses_and_doubles_nothing(
    start_service: Callable[..., ServiceProcess], broker: Broker, private_redis: PrivateRedis, own_store: Store
) -> None:
    await add_users(own_store)
    worker = start_service(
        "delivery",
        POSTROOM_REDIS_URL=private_redis.url,
        POSTROOM_RETRY_SCHEDULE="1s",
        POSTROOM_DELIVERY_PREFETCH="100",
        POSTROOM_DELIVERY_CONCURRENCY="32",
    )
    publishing = asyncio.create_task(publish_all(broker, MESSAGES))

    async def progressed() -> bool:
        return await stored_count(own_store) >= 60

    await wait_until(progressed, what="60 stored")
    private_redis.kill()
    expected = await publishing
    total = sum(len(ids) for ids in expected.values())

    async def unready() -> bool:
        return http_status(f"{worker.metrics_url}/readyz") == 503

    await wait_until(unready, what="/readyz 503 while Redis is down")
    # The outage must reach deliveries, not only /readyz: restarted too soon, a delivery still retrying its Redis
    # connection would succeed afterwards and the outage would test nothing. Redis dies once 60 of the 334 deliveries
    # are stored, so the rest are attempted while it is down and deferred through the delay queue.
    deferred = 'postroom_delivery_attempts_total{outcome="deferred",status_class="4",transport="local"}'

    async def deferring() -> bool:
        return metric(worker, deferred) > 0

    await wait_until(deferring, what="deliveries deferred while Redis is down")
    private_redis.start()

    async def ready() -> bool:
        return http_status(f"{worker.metrics_url}/readyz") == 200

    await wait_until(ready, what="/readyz 200 after Redis is back")

    async def all_stored() -> bool:
        try:
            return await stored_count(own_store) >= total
        except redis.exceptions.ConnectionError:
            return False

    await wait_until(all_stored, timeout=60, what="every message stored after the restart")

    async def drained() -> bool:
        depths = [await broker.depth(q) for q in (broker.topology.incoming, broker.topology.delay_queue(1))]
        return depths == [0, 0]

    await wait_until(drained, what="queues drained")
    await assert_exactly_once(own_store, expected)
    assert await stored_count(own_store) == total
    assert await broker.depth(broker.topology.dead) == 0
