"""Accounts against a single Redis and a Redis Cluster: domains, users (argon2id, rehash), aliases, removal."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from services.store import Store, passwords
from services.store.accounts import AccountError, ConflictError, NotFoundError
from services.store.addresses import AddressError


async def mailbox_keys_left(store: Store, address: str, uids: list[str]) -> int:
    box = store.keys.mailbox(address)
    names = [box.account, box.index, box.sizes, box.wire, box.usage, box.seq, box.lock, *(box.message(u) for u in uids)]
    return int(await store.redis.exists(*names))  # one hash slot: a multi-key EXISTS is fine on a cluster


async def test_domains(store: Store) -> None:
    assert await store.accounts.add_domain("Example.TEST.")
    assert not await store.accounts.add_domain("example.test")
    assert await store.accounts.list_domains() == ["example.test"]
    assert await store.accounts.is_local_domain("EXAMPLE.test")
    with pytest.raises(AddressError):
        await store.accounts.add_domain("bad_domain!")
    await store.accounts.add_user("a@example.test", "pw")
    with pytest.raises(ConflictError):
        await store.accounts.remove_domain("example.test")
    await store.accounts.remove_user("a@example.test")
    await store.accounts.add_alias("@example.test", ["x@remote.test"])
    await store.accounts.add_alias("b@example.test", ["x@remote.test"])
    assert await store.accounts.remove_domain("example.test")
    assert await store.accounts.list_aliases() == {}  # its aliases went with it
    assert not await store.accounts.remove_domain("example.test")


async def test_users_and_authentication(store: Store) -> None:
    with pytest.raises(AccountError, match="not a local domain"):
        await store.accounts.add_user("a@example.test", "pw")
    await store.accounts.add_domain("example.test")
    user = await store.accounts.add_user("Alice@Example.test", "secret", quota=100)
    assert user.address == "alice@example.test" and user.quota == 100
    with pytest.raises(ConflictError):
        await store.accounts.add_user("alice@example.test", "other")
    with pytest.raises(AccountError):
        await store.accounts.add_user("b@example.test", "")
    with pytest.raises(AccountError):
        await store.accounts.add_user("b@example.test", "x", quota=-5)
    with pytest.raises(AddressError):
        await store.accounts.add_user("no at sign", "x")
    assert await store.accounts.authenticate("ALICE@example.test", "secret")
    assert not await store.accounts.authenticate("alice@example.test", "wrong")
    assert not await store.accounts.authenticate("nobody@example.test", "secret")
    assert not await store.accounts.authenticate("garbage", "secret")
    await store.accounts.set_quota("alice@example.test", 5)
    await store.accounts.set_password("alice@example.test", "new")
    fetched = await store.accounts.get_user("alice@example.test")
    assert fetched is not None and fetched.quota == 5
    assert await store.accounts.authenticate("alice@example.test", "new")
    assert await store.accounts.list_users() == ["alice@example.test"]


async def test_updates_of_a_missing_user_do_not_create_it(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    with pytest.raises(NotFoundError):
        await store.accounts.set_password("ghost@example.test", "x")
    with pytest.raises(NotFoundError):
        await store.accounts.set_quota("ghost@example.test", 1)
    assert not await store.accounts.user_exists("ghost@example.test")


async def test_rehash_on_login_when_parameters_changed(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("old@example.test", "pw")
    account = store.keys.mailbox("old@example.test").account
    weak = PasswordHasher(time_cost=1, memory_cost=2048, parallelism=2).hash("pw")  # not what we configure
    await store.redis.hset(account, "password", weak)
    assert await store.accounts.authenticate("old@example.test", "pw")
    rehashed = (await store.redis.hget(account, "password")).decode()
    assert rehashed != weak and rehashed.startswith("$argon2id$")
    assert not passwords._hasher.check_needs_rehash(rehashed)  # the parameters configured now
    assert await store.accounts.authenticate("old@example.test", "pw")


async def test_rehash_never_overwrites_a_password_changed_meanwhile(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("u@example.test", "pw")
    account = store.keys.mailbox("u@example.test").account
    current = (await store.redis.hget(account, "password")).decode()
    # The compare-and-set a login's rehash does, with a stale expected value: refused, nothing changes.
    assert await store.accounts._update(keys=[account], args=["password", "stale-rehash", "not-current"]) == -1
    assert (await store.redis.hget(account, "password")).decode() == current


async def test_aliases(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("root@example.test", "pw")
    await store.accounts.add_alias("Postmaster@example.test", ["root@example.test", "Ops@Remote.test"])
    await store.accounts.add_alias("@example.test", ["root@example.test"])
    assert await store.accounts.alias_targets("postmaster@example.test") == ["root@example.test", "ops@remote.test"]
    assert await store.accounts.recipient_exists("anything@example.test")  # catch-all
    with pytest.raises(AccountError):
        await store.accounts.add_alias("x@elsewhere.test", ["root@example.test"])
    with pytest.raises(AccountError):
        await store.accounts.add_alias("x@example.test", [])
    with pytest.raises(AddressError):
        await store.accounts.add_alias("x@example.test", ["not an address"])
    assert await store.accounts.remove_alias("@example.test")
    assert not await store.accounts.recipient_exists("anything@example.test")
    assert await store.accounts.recipient_exists("postmaster@example.test")


async def test_remove_user_deletes_the_whole_mailbox(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("gone@example.test", "pw")
    uids = []
    for n in range(3):
        queue_id = f"01ARZ3NDEKTSV4RRFFQ69G5FA{n}"
        await store.mailboxes.deliver("gone@example.test", queue_id, b"Subject: %d\r\n\r\nhi\r\n" % n)
        uids.append(queue_id)
    assert await store.mailboxes.acquire_lock("gone@example.test", 30)
    assert await store.accounts.remove_user("gone@example.test")
    assert await mailbox_keys_left(store, "gone@example.test", uids) == 0
    assert await store.accounts.list_users() == []
    assert not await store.accounts.remove_user("gone@example.test")
    assert not await store.accounts.authenticate("gone@example.test", "pw")
    # Re-created, it starts empty.
    await store.accounts.add_user("gone@example.test", "pw2")
    user = await store.accounts.get_user("gone@example.test")
    assert user is not None and (user.messages, user.bytes) == (0, 0)
    assert await store.mailboxes.snapshot("gone@example.test") == []


async def test_lookup_reads_every_fact_of_an_address_at_once(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("Ann@example.test", "pw")
    await store.accounts.add_alias("sales@example.test", ["ann@example.test"])
    user = await store.accounts.lookup("ANN@Example.test")
    assert (user.local_domain, user.user, user.aliases, user.catch_all) == (True, True, None, None)
    alias = await store.accounts.lookup("sales@example.test")
    assert (alias.user, alias.aliases, alias.deliverable) == (False, ["ann@example.test"], True)
    nobody = await store.accounts.lookup("nobody@example.test")
    assert (nobody.local_domain, nobody.deliverable) == (True, False)
    await store.accounts.add_alias("@example.test", ["ann@example.test"])
    caught = await store.accounts.lookup("nobody@example.test")
    assert (caught.catch_all, caught.deliverable) == (["ann@example.test"], True)
    remote = await store.accounts.lookup("someone@remote.test")
    assert (remote.local_domain, remote.deliverable) == (False, False)
