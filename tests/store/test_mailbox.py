"""Mailboxes against a single Redis and a Redis Cluster: idempotent atomic delivery, snapshots, locked deletion."""

from __future__ import annotations

import asyncio

from services.store import Store, StoreOutcome
from shared.queue_id import new_queue_id
from tests.redis_private import PrivateRedis

ADDRESS = "box@example.test"


async def make_user(store: Store, quota: int = 0) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ADDRESS, "pw", quota=quota)


async def test_deliver_outcomes(store: Store) -> None:
    assert await store.mailboxes.deliver(ADDRESS, new_queue_id(), b"x") == StoreOutcome.NO_MAILBOX
    await make_user(store, quota=30)
    queue_id = new_queue_id()
    assert await store.mailboxes.deliver(ADDRESS, queue_id, b"line one\nline two\n") == StoreOutcome.STORED
    assert await store.mailboxes.deliver(ADDRESS, queue_id, b"line one\nline two\n") == StoreOutcome.DUPLICATE
    assert await store.mailboxes.deliver(ADDRESS, new_queue_id(), b"y" * 20) == StoreOutcome.OVER_QUOTA
    stored = await store.mailboxes.read(ADDRESS, queue_id)
    assert stored == b"line one\r\nline two\r\n"
    assert await store.mailboxes.read_range(ADDRESS, queue_id, 0, 7) == b"line one"
    # Several bodies at once (one MGET over the mailbox's hash slot); a missing one is None.
    assert await store.mailboxes.read_many(ADDRESS, [queue_id, new_queue_id(), queue_id]) == [stored, None, stored]
    user = await store.accounts.get_user(ADDRESS)
    assert user is not None and (user.messages, user.bytes) == (1, len(stored))


async def test_snapshot_order_and_locked_delete(store: Store) -> None:
    await make_user(store)
    ids = [new_queue_id() for _ in range(4)]
    for n, queue_id in enumerate(ids):
        await store.mailboxes.deliver(ADDRESS, queue_id, b"m%d\r\n" % n)
    snapshot = await store.mailboxes.snapshot(ADDRESS)
    assert [m.uid for m in snapshot] == ids and all(m.size == 4 for m in snapshot)
    token = await store.mailboxes.acquire_lock(ADDRESS, 30)
    assert token is not None
    assert await store.mailboxes.acquire_lock(ADDRESS, 30) is None  # one session at a time
    assert await store.mailboxes.delete(ADDRESS, "not-the-owner", ids[:1]) is None
    assert await store.mailboxes.delete(ADDRESS, token, [ids[0], ids[2], "unknown"]) == 2
    assert [m.uid for m in await store.mailboxes.snapshot(ADDRESS)] == [ids[1], ids[3]]
    assert await store.mailboxes.refresh_lock(ADDRESS, token, 30)
    assert await store.mailboxes.release_lock(ADDRESS, token)
    assert not await store.mailboxes.refresh_lock(ADDRESS, token, 30)
    assert await store.mailboxes.delete(ADDRESS, token, [ids[1]]) is None  # lock gone: nothing deleted
    user = await store.accounts.get_user(ADDRESS)
    assert user is not None and (user.messages, user.bytes) == (2, 8)


async def test_lock_needs_an_account(store: Store) -> None:
    assert await store.mailboxes.acquire_lock("nobody@example.test", 30) is None


async def test_deliver_many_stores_each_mailbox_once_in_one_call(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("a@example.test", "pw")
    await store.accounts.add_user("b@example.test", "pw")
    await store.accounts.add_user("full@example.test", "pw", quota=5)
    addresses = ["a@example.test", "b@example.test", "full@example.test", "none@example.test"]
    queue_id = new_queue_id()
    first = await store.mailboxes.deliver_many(addresses, queue_id, b"line one\nline two\n")
    assert first == [StoreOutcome.STORED, StoreOutcome.STORED, StoreOutcome.OVER_QUOTA, StoreOutcome.NO_MAILBOX]
    again = await store.mailboxes.deliver_many(addresses[:2], queue_id, b"line one\nline two\n")
    assert again == [StoreOutcome.DUPLICATE, StoreOutcome.DUPLICATE]
    for address in addresses[:2]:
        assert await store.mailboxes.read(address, queue_id) == b"line one\r\nline two\r\n"
        user = await store.accounts.get_user(address)
        assert user is not None and user.messages == 1


async def test_deliver_many_survives_an_emptied_script_cache(store: Store) -> None:
    """A restarted Redis has no scripts: NOSCRIPT means the call did not run, and it is repeated with a load."""
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("a@example.test", "pw")
    await store.accounts.add_user("b@example.test", "pw")
    store.mailboxes._store.sha = "0" * 40  # what a script cache without our script looks like to the pipeline
    queue_id = new_queue_id()
    results = await store.mailboxes.deliver_many(["a@example.test", "b@example.test"], queue_id, b"x\r\n")
    assert results == [StoreOutcome.STORED, StoreOutcome.STORED]
    assert [len(await store.mailboxes.snapshot(a)) for a in ("a@example.test", "b@example.test")] == [1, 1]


async def test_a_uid_still_in_the_mailbox_is_a_duplicate_once_its_dedup_key_expired(store: Store) -> None:
    """Invariant 4 for ever: a redelivery after the dedup TTL (a dead letter requeued weeks later) stores nothing
    and counts nothing twice, because the uid is still in the mailbox."""
    await make_user(store)
    queue_id = new_queue_id()
    assert await store.mailboxes.deliver(ADDRESS, queue_id, b"once\r\n") == StoreOutcome.STORED
    await store.redis.delete(store.keys.mailbox(ADDRESS).dedup(queue_id))  # what 8 days do
    assert await store.mailboxes.deliver(ADDRESS, queue_id, b"once\r\n") == StoreOutcome.DUPLICATE
    assert await store.mailboxes.deliver_many([ADDRESS], queue_id, b"once\r\n") == [StoreOutcome.DUPLICATE]
    assert [m.uid for m in await store.mailboxes.snapshot(ADDRESS)] == [queue_id]
    user = await store.accounts.get_user(ADDRESS)
    assert user is not None and (user.messages, user.bytes) == (1, 6)


async def test_a_header_goes_before_the_body_and_counts_towards_size_and_quota(store: Store) -> None:
    """Return-Path is passed on its own and joined by Redis (no second copy of the body in the caller)."""
    header = b"Return-Path: <s@origin.test>\r\n"
    body = b"Subject: hi\r\n\r\nhello\r\n"
    await make_user(store, quota=len(header) + len(body))
    queue_id = new_queue_id()
    assert await store.mailboxes.deliver(ADDRESS, queue_id, body, header) == StoreOutcome.STORED
    assert await store.mailboxes.read(ADDRESS, queue_id) == header + body
    [info] = await store.mailboxes.snapshot(ADDRESS)
    assert info.size == len(header) + len(body)
    user = await store.accounts.get_user(ADDRESS)
    assert user is not None and (user.messages, user.bytes) == (1, len(header) + len(body))
    # The quota is full to the byte: the header alone is one byte too many for another message.
    assert await store.mailboxes.deliver_many([ADDRESS], new_queue_id(), b"", b"x") == [StoreOutcome.OVER_QUOTA]


async def test_a_snapshot_costs_the_same_commands_for_any_mailbox_size(private_redis: PrivateRedis) -> None:
    """Login reads the index and the sizes whole (POP3 needs every uid and size), in two commands, never one per
    message: a 100,000-message mailbox would otherwise run 100,000 commands inside Redis per login."""
    store = Store.connect(private_redis.url, "snap")
    address = "big@example.test"
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(address, "password")
    for start in range(0, 300, 100):
        await asyncio.gather(*(store.mailboxes.deliver(address, f"q{i}", b"x\r\n") for i in range(start, start + 100)))
    private_redis.command("CONFIG", "RESETSTAT")
    assert len(await store.mailboxes.snapshot(address)) == 300
    stats = private_redis.command("INFO", "commandstats")
    inner = {name: entry["calls"] for name, entry in stats.items() if name in ("cmdstat_hget", "cmdstat_hgetall")}
    await store.close()
    assert inner == {"cmdstat_hgetall": 1}


async def test_the_store_flags_bodies_in_wire_form_and_forgets_the_flag_on_delete(store: Store) -> None:
    """The `wire` set holds the uids whose header + body POP3 may send as stored (CRLF only, no line at a dot)."""
    await make_user(store)
    cases = {
        new_queue_id(): (b"a\nb\n", b"", True),  # LF only: stored as CRLF, then in wire form
        new_queue_id(): (b"a\r\n.b\r\n", b"", False),
        new_queue_id(): (b".a\r\n", b"", False),
        new_queue_id(): (b".a\r\n", b"Return-Path: <x@example.test>\r\n", False),  # the dot starts a line after it
        new_queue_id(): (b"a\r\n", b"Return-Path: <x@example.test>\r\n", True),
        new_queue_id(): (b"a\r\n", b"X: y\r\n.z\r\n", False),
        new_queue_id(): (b"a\r\n", b"X: y\n", False),
    }
    for queue_id, (body, header, _) in cases.items():
        assert await store.mailboxes.deliver(ADDRESS, queue_id, body, header) == StoreOutcome.STORED
    imported = "imported-uidl"
    assert await store.mailboxes.import_message(ADDRESS, imported, b"x\r\n") == StoreOutcome.STORED
    snapshot = await store.mailboxes.snapshot(ADDRESS)
    assert [info.wire for info in snapshot] == [want for _, _, want in cases.values()] + [True]
    token = await store.mailboxes.acquire_lock(ADDRESS, 30)
    assert token is not None
    assert await store.mailboxes.delete(ADDRESS, token, [info.uid for info in snapshot]) == len(snapshot)
    assert not await store.redis.exists(store.keys.mailbox(ADDRESS).wire)
