"""Concurrent changes to one user: deliveries racing the quota, duplicates, passwd against remove, and a user
removed while its POP3 session (lock, snapshot) is open. Each runs on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib

from services.store import Store, StoreOutcome
from services.store.accounts import NotFoundError
from shared.queue_id import new_queue_id

ADDRESS = "busy@example.test"


async def keys_left(store: Store, uids: list[str]) -> int:
    box = store.keys.mailbox(ADDRESS)
    names = [box.account, box.index, box.sizes, box.wire, box.usage, box.seq, box.lock, *(box.message(u) for u in uids)]
    return int(await store.redis.exists(*names))


async def test_concurrent_deliveries_never_overrun_the_quota(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ADDRESS, "pw", quota=1000)
    body = b"x" * 98 + b"\r\n"  # 100 octets: exactly ten fit
    outcomes = await asyncio.gather(*(store.mailboxes.deliver(ADDRESS, new_queue_id(), body) for _ in range(60)))
    assert outcomes.count(StoreOutcome.STORED) == 10
    assert outcomes.count(StoreOutcome.OVER_QUOTA) == 50
    user = await store.accounts.get_user(ADDRESS)
    snapshot = await store.mailboxes.snapshot(ADDRESS)
    assert user is not None and (user.messages, user.bytes) == (10, 1000)
    assert len(snapshot) == 10 and sum(m.size for m in snapshot) == 1000


async def test_concurrent_redeliveries_store_once(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ADDRESS, "pw")
    queue_id = new_queue_id()
    outcomes = await asyncio.gather(*(store.mailboxes.deliver(ADDRESS, queue_id, b"same\r\n") for _ in range(30)))
    assert outcomes.count(StoreOutcome.STORED) == 1 and outcomes.count(StoreOutcome.DUPLICATE) == 29
    assert len(await store.mailboxes.snapshot(ADDRESS)) == 1


async def test_concurrent_passwd_and_remove_leave_no_account(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    for round_ in range(3):
        await store.accounts.add_user(ADDRESS, f"pw{round_}")

        async def passwd(n: int) -> None:
            with contextlib.suppress(NotFoundError):
                await store.accounts.set_password(ADDRESS, f"new{n}")

        async def quota(n: int) -> None:
            with contextlib.suppress(NotFoundError):
                await store.accounts.set_quota(ADDRESS, n)

        await asyncio.gather(
            passwd(1),
            quota(10),
            store.accounts.authenticate(ADDRESS, f"pw{round_}"),
            store.accounts.remove_user(ADDRESS),
            passwd(2),
            quota(20),
        )
        # Whatever the interleaving, a removed user stays removed: no late HSET re-created a half account.
        assert not await store.accounts.user_exists(ADDRESS)
        assert ADDRESS not in await store.accounts.list_users()
        assert await keys_left(store, []) == 0


async def test_deliveries_racing_removal_leave_nothing_behind(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ADDRESS, "pw")
    ids = [new_queue_id() for _ in range(40)]
    deliveries = [store.mailboxes.deliver(ADDRESS, q, b"m\r\n") for q in ids]
    results = await asyncio.gather(*deliveries[:20], store.accounts.remove_user(ADDRESS), *deliveries[20:])
    outcomes = [r for r in results if isinstance(r, StoreOutcome)]
    assert set(outcomes) <= {StoreOutcome.STORED, StoreOutcome.NO_MAILBOX}
    assert results[20] is True
    assert await keys_left(store, ids) == 0  # stored before the removal were purged; none stored after it


async def test_user_removed_while_its_pop3_session_is_open(store: Store) -> None:
    """The store side of a POP3 session (lock, snapshot, read, delete at QUIT) when the user disappears midway."""
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ADDRESS, "pw")
    ids = [new_queue_id() for _ in range(3)]
    for queue_id in ids:
        await store.mailboxes.deliver(ADDRESS, queue_id, b"Subject: hi\r\n\r\nbody\r\n")
    token = await store.mailboxes.acquire_lock(ADDRESS, 60)
    assert token is not None
    snapshot = await store.mailboxes.snapshot(ADDRESS)
    assert await store.mailboxes.read(ADDRESS, snapshot[0].uid) is not None

    assert await store.accounts.remove_user(ADDRESS)

    # The session learns it lost the maildrop: reads find nothing, refresh and delete fail, counters are not touched.
    assert await store.mailboxes.read(ADDRESS, snapshot[1].uid) is None
    assert not await store.mailboxes.refresh_lock(ADDRESS, token, 60)
    assert await store.mailboxes.delete(ADDRESS, token, [snapshot[2].uid]) is None
    assert not await store.mailboxes.release_lock(ADDRESS, token)
    assert await store.mailboxes.acquire_lock(ADDRESS, 60) is None
    assert await store.mailboxes.deliver(ADDRESS, new_queue_id(), b"late\r\n") == StoreOutcome.NO_MAILBOX
    assert not await store.accounts.authenticate(ADDRESS, "pw")
    assert await keys_left(store, ids) == 0
