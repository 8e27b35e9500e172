"""Mailboxes whose local part holds a brace (valid atext) on a real Redis Cluster: one slot, no CROSSSLOT."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.store import Store, StoreOutcome
from shared.queue_id import new_queue_id
from tests.redis_cluster import RedisClusterProcesses


@pytest.fixture
async def cluster_store(namespace: str, redis_cluster: RedisClusterProcesses) -> AsyncIterator[Store]:
    handle = Store.connect(redis_cluster.url, namespace, cluster=True)
    yield handle
    await handle.close()


@pytest.mark.parametrize("address", ["}ops@example.com", "{a}b@example.com", "x{}@example.com"])
async def test_a_braced_mailbox_lives_on_a_redis_cluster(cluster_store: Store, address: str) -> None:
    accounts, mailboxes = cluster_store.accounts, cluster_store.mailboxes
    await accounts.add_domain("example.com")
    await accounts.add_user(address, "brace pass")
    assert await accounts.authenticate(address.upper(), "brace pass")
    assert (await accounts.lookup(address)).user

    first, second = new_queue_id(), new_queue_id()
    assert await mailboxes.deliver(address, first, b"Subject: one\r\n\r\nbody\r\n") is StoreOutcome.STORED
    assert await mailboxes.deliver(address, first, b"Subject: one\r\n\r\nbody\r\n") is StoreOutcome.DUPLICATE
    assert await mailboxes.deliver_many([address], second, b"Subject: two\r\n\r\nbody\r\n") == [StoreOutcome.STORED]
    listed = await mailboxes.snapshot(address)
    assert [m.uid for m in listed] == [first, second]
    assert await mailboxes.read_many(address, [first, second]) == [
        b"Subject: one\r\n\r\nbody\r\n",
        b"Subject: two\r\n\r\nbody\r\n",
    ]

    token = await mailboxes.acquire_lock(address, 30)
    assert token is not None
    assert await mailboxes.delete(address, token, [first]) == 1
    assert await mailboxes.release_lock(address, token)
    assert [m.uid for m in await mailboxes.snapshot(address)] == [second]
    user = await accounts.get_user(address)
    assert user is not None and user.messages == 1

    assert await accounts.remove_user(address)
    assert await mailboxes.snapshot(address) == []
    assert not await accounts.user_exists(address)
