"""The login throttle SMTP AUTH and POP3 share: one doubling rule, counters in Redis per account (however the login
spells it) and per client address, and a store refusing writes neither locks anyone out nor skips the check."""

from __future__ import annotations

import redis
from prometheus_client import REGISTRY

from services.store import Store
from services.store.keys import Keys
from services.store.throttle import WINDOW, LoginThrottle, account_subject, client_subject
from tests.redis_private import PrivateRedis

CAROL_SPELLINGS = ["carol@example.test", " CAROL@Example.Test.. ", "Carol@example.TEST.", "carol@EXAMPLE.test.."]


def test_the_doubling_rule() -> None:
    throttle = LoginThrottle(None, Keys("t"), base=1.0, cap=8.0)
    assert [throttle.delay_for(n) for n in range(7)] == [0, 1, 2, 4, 8, 8, 8]
    assert throttle.delay_for(10_000) == 8
    assert LoginThrottle(None, Keys("t"), base=0.0, cap=8.0).delay_for(5) == 0


def test_every_spelling_of_an_account_is_one_subject() -> None:
    assert {account_subject(login) for login in CAROL_SPELLINGS} == {"carol@example.test"}
    assert account_subject("not an address") == account_subject(" NOT AN ADDRESS ")
    assert account_subject("not an address").startswith("?") and len(account_subject("x" * 10_000)) == 33
    assert client_subject("2001:db8:1:2::5") == client_subject("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_subject("::ffff:192.0.2.1") == client_subject("192.0.2.1") == "192.0.2.1"


async def test_failures_are_counted_per_account_and_address_and_expire(store: Store) -> None:
    await store.accounts.add_domain("example.test")
    await store.accounts.add_user("carol@example.test", "right")
    throttle = store.login_throttle(1.0, 8.0)
    # One account guessed at from four addresses, spelt four ways: one counter, one doubling.
    delays = [await throttle.failure(f"198.51.100.{i}", login) for i, login in enumerate(CAROL_SPELLINGS)]
    assert delays == [1, 2, 4, 8]
    assert await throttle.failures(login="carol@example.test") == 4
    # One address guessing at many accounts: its own counter.
    assert [await throttle.failure("192.0.2.7", f"user{i}@example.test") for i in range(3)] == [1, 2, 4]
    assert await throttle.failures(ip="192.0.2.7") == 3
    for key in (store.keys.throttle_account("carol@example.test"), store.keys.throttle_client("192.0.2.7")):
        assert 0 < await store.redis.ttl(key) <= WINDOW
    # A right password clears the account's count, not the guessing address's.
    assert await store.accounts.authenticate(" CAROL@Example.Test.. ", "right")
    await throttle.success("Carol@Example.Test.")
    assert await throttle.failures(login="carol@example.test") == 0
    assert await throttle.failure("192.0.2.7", "carol@example.test") == 8  # 4th failure of the address


async def test_a_store_refusing_writes_fails_open_with_the_maximum_delay(private_redis: PrivateRedis) -> None:
    store = Store.connect(private_redis.url, "throttle")
    try:
        await store.accounts.add_domain("example.test")
        await store.accounts.add_user("carol@example.test", "right")
        throttle = store.login_throttle(0.5, 30.0)
        assert await throttle.failure("192.0.2.1", "carol@example.test") == 0.5
        before = REGISTRY.get_sample_value("postroom_auth_throttle_errors_total", {"operation": "failure"}) or 0
        config_set(private_redis, "maxmemory", "1")  # every write is refused with OOM; reads still work
        assert await throttle.failure("192.0.2.1", "carol@example.test") == 30.0
        after = REGISTRY.get_sample_value("postroom_auth_throttle_errors_total", {"operation": "failure"})
        assert after == before + 1
        # Nobody is locked out: the password check still reads, and success does not raise.
        assert await store.accounts.authenticate("carol@example.test", "right")
        await throttle.success("carol@example.test")
        config_set(private_redis, "maxmemory", "0")
        assert await throttle.failure("192.0.2.1", "carol@example.test") == 1.0  # counting again (2nd failure)
    finally:
        await store.close()


def config_set(server: PrivateRedis, name: str, value: str) -> None:
    """CONFIG SET on the test's own redis-server (never on the shared one)."""
    with redis.Redis(port=server.port, socket_timeout=5) as client:
        client.config_set(name, value)
