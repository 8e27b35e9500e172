"""`RCPT TO:<Postmaster>` (RFC 5321 §4.1.1.3): any case, no domain, on every listener without AUTH, to the
postmaster of the primary domain; and never a way to relay or to reach a mailbox that does not exist."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from services.smtp_ingress import replies
from services.smtp_ingress.postmaster import primary_domain
from services.store import Store
from shared.envelope import Envelope
from tests.helpers import client_tls
from tests.smtp_ingress.conftest import ALICE, RunningIngress, read_queue, run_store

SPELLINGS = ["Postmaster", "postmaster", "POSTMASTER", "pOsTmAsTeR"]
MESSAGE = b"Subject: to the postmaster\r\n\r\nHello.\r\n"


def reply_text(code: int, reply: bytes) -> str:
    return f"{code} {reply.decode()}"


@pytest.fixture
def postmaster(namespace: str, accounts: None) -> str:
    """postmaster@local.test, an alias of alice (as an operator sets it up)."""

    async def add(store: Store) -> None:
        await store.accounts.add_alias("postmaster@local.test", [ALICE])

    run_store(namespace, add)
    return "postmaster@local.test"


def open_session(ingress: RunningIngress, listener: str) -> smtplib.SMTP:
    client = ingress.smtp(listener)
    client.ehlo("client.example.org")
    if listener == "submission":
        client.starttls(context=client_tls())
        client.ehlo("client.example.org")
    return client


@pytest.mark.parametrize("listener", ["smtp", "submission", "smtps"])
def test_every_listener_accepts_postmaster_in_any_case_without_auth(
    make_ingress: Callable[..., RunningIngress], postmaster: str, namespace: str, listener: str
) -> None:
    ingress = make_ingress(trusted_networks="")
    for spelling in SPELLINGS:
        with open_session(ingress, listener) as client:
            assert reply_text(*client.mail("someone@remote.example")) == str(replies.SENDER_OK)
            assert reply_text(*client.rcpt(spelling)) == str(replies.RECIPIENT_OK), spelling
            if listener == "smtp":
                assert reply_text(*client.rcpt(postmaster)) == str(replies.RECIPIENT_OK)  # the same one: kept once
            code, reply = client.data(MESSAGE)
            assert code == 250, reply
    queued = read_queue(namespace, count=len(SPELLINGS))
    assert [Envelope.from_headers(m.headers).recipients for m in queued] == [(postmaster,)] * len(SPELLINGS)


def test_without_auth_a_submission_listener_takes_only_the_postmaster(
    make_ingress: Callable[..., RunningIngress], postmaster: str
) -> None:
    ingress = make_ingress()
    with open_session(ingress, "smtps") as client:
        assert reply_text(*client.mail("someone@remote.example")) == str(replies.SENDER_OK)
        assert reply_text(*client.rcpt(ALICE)) == str(replies.AUTH_REQUIRED)
        assert reply_text(*client.rcpt("someone@remote.example")) == str(replies.AUTH_REQUIRED)
        assert reply_text(*client.rcpt("postmaster@local.test")) == str(replies.AUTH_REQUIRED)  # only the bare form
        assert reply_text(*client.rcpt("Postmaster")) == str(replies.RECIPIENT_OK)


def test_a_postmaster_that_does_not_exist_is_refused_and_never_relayed(
    make_ingress: Callable[..., RunningIngress], accounts: None
) -> None:
    # No postmaster@local.test; and a primary domain that is not local must not turn <Postmaster> into a relay.
    for overrides in ({}, {"primary_domain": "remote.example"}):
        ingress = make_ingress(**overrides)
        with ingress.smtp() as client:
            client.ehlo("client.example.org")
            client.mail("someone@remote.example")
            assert reply_text(*client.rcpt("Postmaster")) == str(replies.NO_SUCH_USER), overrides


def test_the_primary_domain_setting_picks_whose_postmaster(
    make_ingress: Callable[..., RunningIngress], postmaster: str, namespace: str
) -> None:
    async def add(store: Store) -> None:
        await store.accounts.add_domain("other.test")
        await store.accounts.add_alias("postmaster@other.test", [ALICE])

    run_store(namespace, add)
    ingress = make_ingress(primary_domain="Other.Test.")
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("someone@remote.example")
        assert reply_text(*client.rcpt("Postmaster")) == str(replies.RECIPIENT_OK)
        assert client.data(MESSAGE)[0] == 250
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == ("postmaster@other.test",)


async def test_the_primary_domain_by_default(store: Store) -> None:
    assert await primary_domain(None, "mx.example.test", store.accounts) is None  # no local domain yet
    for domain in ("b.test", "example.test", "a.test"):
        await store.accounts.add_domain(domain)
    assert await primary_domain(None, "example.test", store.accounts) == "example.test"  # the host name itself
    assert await primary_domain(None, "MX.Example.Test.", store.accounts) == "example.test"  # its parent
    assert await primary_domain(None, "mx.elsewhere.test", store.accounts) == "a.test"  # the first local domain
    assert await primary_domain("b.test", "mx.example.test", store.accounts) == "b.test"  # the setting wins
