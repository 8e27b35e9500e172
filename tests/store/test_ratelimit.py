"""Send limits and connection rates in Redis (GCRA, the RATE_LIMIT script), shared by every client of the store."""

from __future__ import annotations

import json

import pytest

from services.store import Rate, RateLimiter, Store, parse_rate
from tests.redis_private import PrivateRedis, private_redis  # noqa: F401  (fixture)
from tests.store.conftest import AdminAPI
from tests.store.test_api import assert_error, call
from tests.store.test_cli import one_line_error, postroom  # noqa: F401  (the CLI fixture)

ALICE = "alice@example.test"


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("500/1h", Rate(500, 3600, 500), "500/1h"),
        (" 60/1m ", Rate(60, 60, 60), "60/1m"),
        ("100,1000/1d", Rate(100, 86400, 1000), "100,1000/1d"),
        ("10/90", Rate(10, 90, 10), "10/90s"),
        ("5/1s", Rate(5, 1, 5), "5/1s"),
    ],
)
def test_rates_parse_and_print(text: str, expected: Rate, shown: str) -> None:
    rate = parse_rate(text, recipients=True)
    assert rate == expected and str(rate) == shown
    assert Rate.from_stored(rate.stored()) == rate


@pytest.mark.parametrize("text", ["", "500", "0/1h", "/1h", "5/0s", "5/x", "-1/1h", "5/1h/2", "1,2,3/1h", "5/400d"])
def test_bad_rates_say_why(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text, recipients=True)


def test_a_connection_rate_has_one_count() -> None:
    with pytest.raises(ValueError, match="N/PERIOD"):
        parse_rate("10,20/1m")


async def test_send_limit_allows_the_burst_then_refuses_with_the_wait(store: Store) -> None:
    limit = parse_rate("3/1h")
    verdicts = [await store.rate_limits.send(ALICE, 1, limit) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    refused = verdicts[-1]
    assert refused.counter == "messages" and str(refused.rate) == "3/1h" and not refused.never
    # One message comes back every period/limit = 20 minutes.
    assert 1190 <= refused.retry_after <= 1200


async def test_recipients_are_counted_apart_from_messages(store: Store) -> None:
    limit = parse_rate("10,5/1h", recipients=True)
    assert (await store.rate_limits.send(ALICE, 3, limit)).allowed
    refused = await store.rate_limits.send(ALICE, 3, limit)
    assert not refused.allowed and refused.counter == "recipients" and str(refused.rate) == "5/1h"
    # A refused charge costs nothing: the two recipients left can still be used.
    assert (await store.rate_limits.send(ALICE, 2, limit)).allowed
    never = await store.rate_limits.send("bob@example.test", 6, limit)
    assert not never.allowed and never.never and never.counter == "recipients"


async def test_every_replica_shares_the_count(store: Store) -> None:
    other = RateLimiter(store.redis, store.keys)  # a second ingress process on the same Redis
    limit = parse_rate("2/1h")
    assert (await store.rate_limits.send(ALICE, 1, limit)).allowed
    assert (await other.send(ALICE.upper(), 1, limit)).allowed
    assert not (await store.rate_limits.send(ALICE, 1, limit)).allowed
    await store.rate_limits.reset_send(ALICE)
    assert (await other.send(ALICE, 1, limit)).allowed


async def test_an_accounts_own_limit_replaces_the_default(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ALICE, "pw")
    await store.accounts.set_send_limit(ALICE, parse_rate("1/1d"))
    user = await store.accounts.get_user(ALICE)
    assert user is not None and user.send_limit == "1/1d"
    default = parse_rate("100/1h")
    assert (await store.rate_limits.send(ALICE, 1, default)).allowed
    refused = await store.rate_limits.send(ALICE, 1, default)
    assert not refused.allowed and str(refused.rate) == "1/1d"
    await store.accounts.set_send_limit(ALICE, None)
    user = await store.accounts.get_user(ALICE)
    assert user is not None and user.send_limit is None
    assert (await store.rate_limits.send(ALICE, 1, default)).allowed
    # The state keys go with the user.
    await store.accounts.remove_user(ALICE)
    assert not await store.redis.exists(store.keys.mailbox(ALICE).send_messages)


async def test_a_shorter_period_never_inherits_a_longer_wait(store: Store) -> None:
    assert (await store.rate_limits.send(ALICE, 1, parse_rate("1/1d"))).allowed
    # POSTROOM_SEND_LIMIT changed to 60/1m: the account owes at most one minute, not the rest of the day.
    refused = await store.rate_limits.send(ALICE, 1, parse_rate("60/1m"))
    assert not refused.allowed and refused.retry_after <= 1


async def test_connection_rate_per_client(store: Store) -> None:
    rate = parse_rate("2/1m")
    assert [(await store.rate_limits.connection("192.0.2.1", rate)).allowed for _ in range(3)] == [True, True, False]
    assert (await store.rate_limits.connection("192.0.2.2", rate)).allowed
    key = store.keys.rate_limit_mx("192.0.2.1")
    assert 0 < await store.redis.pttl(key) <= 60_000  # the state expires once it no longer restricts


async def test_cli_user_update_send_limit(postroom, store: Store) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user(ALICE, "pw")
    result = postroom("user", "update", ALICE, "--send-limit", "100/1h")
    assert result.exit_code == 0, result.output
    assert "send limit 100/1h" in result.stdout
    users = json.loads(postroom("user", "list", "--json").stdout)
    assert users[0]["send_limit"] == "100/1h"
    assert "100/1h" in postroom("user", "list").stdout
    assert postroom("user", "update", ALICE, "--send-limit", "default", "--quota", "7").exit_code == 0
    user = await store.accounts.get_user(ALICE)
    assert user is not None and user.send_limit is None and user.quota == 7
    assert "default" in postroom("user", "list").stdout
    bad = postroom("user", "update", ALICE, "--send-limit", "lots")
    assert bad.exit_code == 2 and "bad rate" in bad.output and "Traceback" not in bad.output
    assert postroom("user", "update", ALICE).exit_code == 2
    assert "no such user" in one_line_error(postroom("user", "update", "bob@example.test", "--send-limit", "1/1h"))


def test_api_patch_send_limit(admin: AdminAPI) -> None:
    call(admin, "POST", "/api/v1/domains", json={"domain": "example.test"})
    call(admin, "POST", "/api/v1/users", json={"address": ALICE, "password": "pw"})
    assert call(admin, "GET", f"/api/v1/users/{ALICE}").json()["send_limit"] is None
    patched = call(admin, "PATCH", f"/api/v1/users/{ALICE}", json={"send_limit": "50,200/1d"})
    assert patched.status_code == 200 and patched.json()["send_limit"] == "50,200/1d"
    patched = call(admin, "PATCH", f"/api/v1/users/{ALICE}", json={"send_limit": "default"})
    assert patched.status_code == 200 and patched.json()["send_limit"] is None
    assert "rate" in assert_error(call(admin, "PATCH", f"/api/v1/users/{ALICE}", json={"send_limit": "often"}), 400)
    assert_error(call(admin, "PATCH", f"/api/v1/users/{ALICE}", json={"send_limit": 5}), 400)
    assert_error(call(admin, "PATCH", "/api/v1/users/nobody@example.test", json={"send_limit": "1/1h"}), 404)


async def test_a_redis_without_the_script_gets_it_once(private_redis: PrivateRedis) -> None:  # noqa: F811
    """The coalesced EVALSHA of a fresh Redis (or one restarted, or after SCRIPT FLUSH) answers NOSCRIPT: the
    script is loaded and the charge made, once."""
    store = Store.connect(private_redis.url, "t", coalesce=True)
    try:
        rate = parse_rate("2/1m")
        assert (await store.rate_limits.connection("192.0.2.1", rate)).allowed
        private_redis.command("SCRIPT", "FLUSH")
        assert (await store.rate_limits.connection("192.0.2.1", rate)).allowed
        assert not (await store.rate_limits.connection("192.0.2.1", rate)).allowed
    finally:
        await store.close()
