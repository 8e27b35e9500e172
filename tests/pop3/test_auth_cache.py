"""The verified-login cache end to end: real pop3 and smtp_ingress processes, poplib and smtplib, their /metrics."""

from __future__ import annotations

import asyncio
import base64
import poplib
import smtplib
import socket

import pytest

from services.store import Store
from tests.harness import Harness, ServiceProcess
from tests.helpers import metric_sum
from tests.pop3.conftest import PASSWORD, USER

FAST = {"POSTROOM_POP3_AUTH_FAILURE_DELAY": "0", "POSTROOM_POP3_LOCK_TTL": "5s"}


def lookups(service: ServiceProcess) -> tuple[float, float]:
    """(misses, hits) of the service's verified-login cache, read off its /metrics."""
    miss, hit = (f'postroom_auth_cache_lookups_total{{result="{result}"}} ' for result in ("miss", "hit"))
    return metric_sum(service.metrics_url, miss), metric_sum(service.metrics_url, hit)


def user_pass(service: ServiceProcess, password: str = PASSWORD) -> bool:
    """One POP3 session logging in with USER/PASS; True when the server took the password."""
    client = service.pop3()
    try:
        client.user(USER)
        try:
            client.pass_(password)
        except poplib.error_proto:
            return False
        client.stat()
        return True
    finally:
        client.quit()


def auth_plain(service: ServiceProcess, password: str = PASSWORD) -> bool:
    """One POP3 session logging in with AUTH PLAIN (RFC 5034), the initial response on the command line."""
    token = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", service.port("pop3")), timeout=20) as sock:
        lines = sock.makefile("rb")
        assert lines.readline().startswith(b"+OK")
        sock.sendall(f"AUTH PLAIN {token}\r\n".encode())
        answer = lines.readline()
        sock.sendall(b"QUIT\r\n")
        assert lines.readline().startswith(b"+OK")
    return answer.startswith(b"+OK")


@pytest.fixture
async def account(store: Store) -> str:
    await store.accounts.add_domain(USER.split("@")[1])
    await store.accounts.add_user(USER, PASSWORD)
    return USER


async def test_a_second_login_is_a_hit_and_a_wrong_password_never_is(harness: Harness, account: str) -> None:
    service = harness.process("pop3", **FAST)
    assert lookups(service) == (0, 0)
    assert await asyncio.to_thread(user_pass, service)
    assert lookups(service) == (1, 0)  # checked with argon2id, then remembered
    assert await asyncio.to_thread(user_pass, service)
    assert lookups(service) == (1, 1)
    assert not await asyncio.to_thread(user_pass, service, "not the password")
    assert lookups(service) == (2, 1)  # a wrong password is looked up, misses, and pays the full check
    assert await asyncio.to_thread(auth_plain, service)  # SASL PLAIN shares the cache with USER/PASS
    assert lookups(service) == (2, 2)


async def test_a_changed_password_refuses_the_cached_one(harness: Harness, account: str, store: Store) -> None:
    service = harness.process("pop3", **FAST)
    assert await asyncio.to_thread(user_pass, service)
    assert await asyncio.to_thread(user_pass, service)
    assert lookups(service) == (1, 1)
    await store.accounts.set_password(USER, "a new password")
    assert not await asyncio.to_thread(user_pass, service)  # the old password, remembered under the old hash
    assert await asyncio.to_thread(user_pass, service, "a new password")
    assert lookups(service) == (3, 1)


async def test_a_ttl_of_zero_turns_the_cache_off(harness: Harness, account: str) -> None:
    service = harness.process("pop3", POSTROOM_AUTH_CACHE_TTL="0", **FAST)
    for _ in range(2):
        assert await asyncio.to_thread(user_pass, service)
    assert lookups(service) == (0, 0)


async def test_submission_logins_use_the_cache(harness: Harness, account: str) -> None:
    service = harness.process("smtp_ingress")

    def login() -> None:
        with service.smtp("smtps") as client:
            client.login(USER, PASSWORD)

    def wrong() -> int:
        # AUTH PLAIN alone: smtplib's login() would try LOGIN after PLAIN failed, a second wrong check.
        with service.smtp("smtps") as client, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.ehlo()
            client.user, client.password = USER, "not the password"
            client.auth("PLAIN", client.auth_plain)
        return refused.value.smtp_code

    await asyncio.to_thread(login)
    await asyncio.to_thread(login)
    assert lookups(service) == (1, 1)
    assert await asyncio.to_thread(wrong) == 535
    assert lookups(service) == (2, 1)
