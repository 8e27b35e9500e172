"""Alias and catch-all expansion against the real store: remote targets, depth limit, loops, dedupe."""

from __future__ import annotations

import pytest

from services.delivery.routing import Router
from services.store import Store


@pytest.fixture(params=[False, True], ids=["own-round-trips", "coalesced"])
async def accounts(store: Store, request: pytest.FixtureRequest) -> Store:
    """The test's store, and the delivery's kind (lookups sharing round trips) on the same client."""
    store = Store(store.redis, store.namespace, coalesce=request.param)
    await store.accounts.add_domain("example.test")
    for user in ("alice", "bob", "carol"):
        await store.accounts.add_user(f"{user}@example.test", "pw")
    return store


async def test_alias_to_local_and_remote_with_dedupe(accounts: Store) -> None:
    await accounts.accounts.add_alias("team@example.test", ["alice@example.test", "friend@remote.test"])
    await accounts.accounts.add_alias("all@example.test", ["team@example.test", "alice@example.test"])
    plan = await Router(accounts.accounts, 10).plan(("all@example.test", "Alice@example.test", "x@other.test"))
    assert [(t.address, t.original) for t in plan.local] == [("alice@example.test", "all@example.test")]
    assert {d: [t.address for t in ts] for d, ts in plan.remote.items()} == {
        "remote.test": ["friend@remote.test"],
        "other.test": ["x@other.test"],
    }
    assert plan.failed == []


async def test_catch_all_only_for_addresses_without_a_mailbox(accounts: Store) -> None:
    await accounts.accounts.add_alias("@example.test", ["carol@example.test"])
    plan = await Router(accounts.accounts, 10).plan(("bob@example.test", "whoever@example.test"))
    assert [t.address for t in plan.local] == ["bob@example.test", "carol@example.test"]


async def test_unknown_local_address_goes_to_the_store(accounts: Store) -> None:
    plan = await Router(accounts.accounts, 10).plan(("nobody@example.test",))
    assert [t.address for t in plan.local] == ["nobody@example.test"]  # the store answers NO_MAILBOX → 5.1.1


async def test_depth_limit(accounts: Store) -> None:
    for i in range(5):
        await accounts.accounts.add_alias(f"a{i}@example.test", [f"a{i + 1}@example.test"])
    await accounts.accounts.add_alias("a5@example.test", ["bob@example.test"])
    assert [t.address for t in (await Router(accounts.accounts, 10).plan(("a0@example.test",))).local] == [
        "bob@example.test"
    ]
    shallow = await Router(accounts.accounts, 3).plan(("a0@example.test",))
    assert shallow.local == [] and [(f.recipient, f.enhanced) for f in shallow.failed] == [("a0@example.test", "5.4.6")]


async def test_alias_loops_end(accounts: Store) -> None:
    await accounts.accounts.add_alias("x@example.test", ["y@example.test"])
    await accounts.accounts.add_alias("y@example.test", ["x@example.test"])
    await accounts.accounts.add_alias("alice@example.test", ["alice@example.test", "bob@example.test"])
    plan = await Router(accounts.accounts, 10).plan(("x@example.test", "alice@example.test"))
    assert [f.enhanced for f in plan.failed] == ["5.4.6"]
    assert [t.address for t in plan.local] == ["alice@example.test", "bob@example.test"]


async def test_malformed_recipient_fails_5_1_3(accounts: Store) -> None:
    plan = await Router(accounts.accounts, 10).plan(("no-at-sign", "a b@example.test", "bob@example.test"))
    assert [(f.recipient, f.enhanced) for f in plan.failed] == [("no-at-sign", "5.1.3"), ("a b@example.test", "5.1.3")]
    assert [t.address for t in plan.local] == ["bob@example.test"]


async def test_recipients_and_list_members_keep_their_order_and_their_own_failures(accounts: Store) -> None:
    members = [f"m{i:02d}@example.test" for i in range(30)]
    for member in members:
        await accounts.accounts.add_user(member, "pw")
    await accounts.accounts.add_alias("list@example.test", [*members, "out@remote.test"])
    for i in range(4):
        await accounts.accounts.add_alias(f"deep{i}@example.test", [f"deep{i + 1}@example.test"])
    plan = await Router(accounts.accounts, 3).plan(
        ("deep0@example.test", "list@example.test", "bad address", "bob@example.test", "m05@example.test")
    )
    assert [(t.address, t.original) for t in plan.local] == [
        *((m, "list@example.test") for m in members),
        ("bob@example.test", "bob@example.test"),
    ]
    assert [t.address for t in plan.remote["remote.test"]] == ["out@remote.test"]
    assert [(f.recipient, f.enhanced) for f in plan.failed] == [
        ("deep0@example.test", "5.4.6"),
        ("bad address", "5.1.3"),
    ]
