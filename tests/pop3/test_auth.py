"""Logging in: USER/PASS, AUTH PLAIN and LOGIN (RFC 5034), plaintext policy, failures, response codes."""

from __future__ import annotations

import base64

import pytest

from services.pop3 import metrics, replies
from services.pop3.server import Pop3Server
from services.store import Store
from tests.pop3.conftest import PASSWORD, USER, Client, StartServer, deliver, message

ERR_AUTH = "-ERR " + replies.ERR_AUTH_FAILED.text


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def plain(user: str = USER, password: str = PASSWORD, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


async def test_auth_plain_with_initial_response(pop3: Pop3Server, account: str, store: Store) -> None:
    await deliver(store, message("x"))
    client = await Client.connect(pop3.ports["pop3"])
    assert (await client.cmd(f"AUTH PLAIN {plain()}")).startswith("+OK Maildrop has 1 message")
    assert (await client.cmd("STAT")).startswith("+OK 1 ")
    await client.close()


async def test_auth_plain_with_continuation(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert (await client.cmd(plain(authzid=USER))).startswith("+OK")
    await client.close()


async def test_auth_login_both_ways(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd("AUTH LOGIN") == "+ " + b64("Username:")
    assert await client.cmd(b64(USER)) == "+ " + b64("Password:")
    assert (await client.cmd(b64(PASSWORD))).startswith("+OK")
    assert (await client.cmd("QUIT")).startswith("+OK")
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd(f"AUTH LOGIN {b64(USER)}") == "+ " + b64("Password:")
    assert (await client.cmd(b64(PASSWORD))).startswith("+OK")
    await client.close()


async def test_auth_cancel_bad_base64_and_unknown_mechanism(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert await client.cmd("*") == "-ERR " + replies.ERR_AUTH_CANCELLED.text
    assert await client.cmd("AUTH LOGIN") == "+ " + b64("Username:")
    assert await client.cmd(b64(USER)) == "+ " + b64("Password:")
    assert await client.cmd("*") == "-ERR " + replies.ERR_AUTH_CANCELLED.text
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert await client.cmd("not base64!") == "-ERR " + replies.ERR_AUTH_BAD_BASE64.text
    assert await client.cmd("AUTH CRAM-MD5") == "-ERR " + replies.ERR_AUTH_MECHANISM.text
    _head, mechanisms = await client.multiline("AUTH")
    assert mechanisms == ["PLAIN", "LOGIN"]
    # Still in AUTHORIZATION and usable.
    assert (await client.cmd(f"AUTH PLAIN {plain()}")).startswith("+OK")
    await client.close()


@pytest.mark.parametrize(
    "attempt",
    [
        "USER {user}\r\nPASS wrong",
        "USER nobody@pop.test\r\nPASS {password}",
        "USER not-an-address\r\nPASS {password}",
        "AUTH PLAIN " + plain(password="wrong"),
        "AUTH PLAIN " + plain(user="nobody@pop.test"),
        "AUTH PLAIN " + plain(authzid="bob@pop.test"),
        "AUTH PLAIN " + b64("garbage"),
        "AUTH LOGIN " + b64("nobody@pop.test") + "\r\n" + b64(PASSWORD),
    ],
)
async def test_every_failure_looks_the_same(pop3: Pop3Server, account: str, attempt: str) -> None:
    """Unknown user, wrong password, bad SASL: one reply (RFC 3206 [AUTH]), and the same argon2 work each."""
    client = await Client.connect(pop3.ports["pop3"])
    lines = attempt.format(user=USER, password=PASSWORD).split("\r\n")
    before = sum(metrics.AUTH_FAILURES.labels(m)._value.get() for m in metrics.MECHANISMS)
    for line in lines[:-1]:
        assert (await client.cmd(line)).startswith("+")
    assert await client.cmd(lines[-1]) == ERR_AUTH
    after = sum(metrics.AUTH_FAILURES.labels(m)._value.get() for m in metrics.MECHANISMS)
    assert after == before + 1
    await client.close()


async def test_too_many_failures_close_the_connection(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.login(password="bad1") == ERR_AUTH
    assert await client.login(password="bad2") == ERR_AUTH
    assert await client.login(password="bad3") == "-ERR " + replies.ERR_TOO_MANY_AUTH_FAILURES.text
    assert await client.closed()


async def test_failures_are_counted_by_the_shared_throttle(start_pop3: StartServer, store: Store, account: str) -> None:
    """The server records each failure in the store's throttle, under the account however the login spells it
    (the doubling rule itself: tests/store/test_throttle.py)."""
    throttle = store.login_throttle(0.01, 0.05)
    server = await start_pop3(throttle=throttle)
    client = await Client.connect(server.ports["pop3"])
    assert await client.login(password="bad") == ERR_AUTH
    assert await client.login(user=USER.upper() + ".", password="bad") == ERR_AUTH
    assert await throttle.failures(login=USER) == 2
    assert await throttle.failures(ip="127.0.0.1") == 2
    assert (await client.login()).startswith("+OK")
    assert await throttle.failures(login=USER) == 0  # success clears the account's count
    assert await throttle.failures(ip="127.0.0.1") == 2  # but not the address's
    await client.close()


async def test_any_spelling_of_the_account_opens_its_one_maildrop(
    start_pop3: StartServer, store: Store, account: str
) -> None:
    await deliver(store, message("hello"))
    server = await start_pop3()
    first = await Client.connect(server.ports["pop3"])
    assert await first.login(user="ALICE@Pop.Test..") == "+OK " + replies.ok_maildrop(1, len(message("hello"))).text
    second = await Client.connect(server.ports["pop3"])
    assert await second.login() == "-ERR " + replies.ERR_IN_USE.text  # the same lock, whatever the spelling
    await first.close()
    await second.close()


async def test_apop_is_off(pop3: Pop3Server, account: str) -> None:
    client = await Client.connect(pop3.ports["pop3"])
    assert await client.cmd("APOP alice 0123456789abcdef0123456789abcdef") == "-ERR " + replies.ERR_APOP_DISABLED.text
    await client.close()


async def test_plaintext_refused_off_loopback_until_tls(start_pop3: StartServer, account: str) -> None:
    """A client that is not on loopback (faked by the server's peer hook) must use TLS to send a password."""
    server = await start_pop3(peer_of=lambda conn: "192.0.2.77")
    client = await Client.connect(server.ports["pop3"])
    _, capa = await client.multiline("CAPA")
    assert "STLS" in capa and "USER" not in capa and not any(line.startswith("SASL") for line in capa)
    refused = "-ERR " + replies.ERR_PLAINTEXT_DISALLOWED.text
    assert await client.cmd(f"USER {USER}") == refused
    assert await client.cmd(f"PASS {PASSWORD}") == refused
    assert await client.cmd(f"AUTH PLAIN {plain()}") == refused
    assert await client.cmd("AUTH LOGIN") == refused
    await client.close()

    tls_client = await Client.connect(server.ports["pop3s"], tls=True)
    _, capa = await tls_client.multiline("CAPA")
    assert "USER" in capa and "SASL PLAIN LOGIN" in capa and "STLS" not in capa
    assert (await tls_client.login()).startswith("+OK")
    await tls_client.close()


async def test_plaintext_allowed_by_configuration(start_pop3: StartServer, account: str) -> None:
    server = await start_pop3(peer_of=lambda conn: "192.0.2.77", pop3_allow_plaintext_auth=True)
    client = await Client.connect(server.ports["pop3"])
    assert (await client.login()).startswith("+OK")
    await client.close()


async def test_utf8_user_names(pop3: Pop3Server, store: Store) -> None:
    await store.accounts.add_domain("pop.test")
    await store.accounts.add_user("jörg@pop.test", "pässwörd")
    client = await Client.connect(pop3.ports["pop3"])
    _, capa = await client.multiline("CAPA")
    assert "UTF8 USER" in capa
    assert await client.cmd("UTF8") == "+OK " + replies.OK_UTF8.text
    assert (await client.login("jörg@pop.test", "pässwörd")).startswith("+OK")
    assert await client.cmd("UTF8") == "-ERR " + replies.ERR_WRONG_STATE.text
    await client.close()


async def test_in_use_response_code_after_sasl(pop3: Pop3Server, account: str) -> None:
    first = await Client.connect(pop3.ports["pop3"])
    assert (await first.cmd(f"AUTH PLAIN {plain()}")).startswith("+OK")
    second = await Client.connect(pop3.ports["pop3"])
    assert await second.cmd(f"AUTH PLAIN {plain()}") == "-ERR " + replies.ERR_IN_USE.text
    await first.close()
    await second.close()
