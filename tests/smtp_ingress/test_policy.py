"""services/smtp_ingress/policy.py: relay policy, sender ownership, recipient and size limits through a live ingress
(docs/design.md invariant 7; RFC 5321 §3.6, §4.5.3.1), and its address, HELO and trusted-network checks on their own."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from services.smtp_ingress import policy, replies
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.policy import check_address, client_ip, is_trusted, valid_helo
from services.store import Store
from shared.envelope import Envelope
from shared.settings import load_settings
from tests.smtp_ingress.conftest import (
    ALICE,
    BOB,
    PASSWORD,
    SIMPLE_MESSAGE,
    RunningIngress,
    read_queue,
    run_store,
    send,
)
from tests.smtp_ingress.rawsmtp import RawSMTP


def reply_text(code: int, reply: bytes) -> str:
    return f"{code} {reply.decode()}"


@pytest.fixture
def untrusted(make_ingress: Callable[..., RunningIngress], accounts: None) -> RunningIngress:
    """An ingress that trusts no network, so loopback clients are strangers."""
    return make_ingress(trusted_networks="")


def rcpt_reply(ingress: RunningIngress, address: str, sender: str = "sender@remote.example") -> str:
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        assert raw.command(f"MAIL FROM:<{sender}>") == str(replies.SENDER_OK)
        return raw.command(f"RCPT TO:{address}")


RELAY_TRICKS = [
    ("<someone@remote.example>", replies.RELAY_DENIED),
    ("<@local.test:someone@remote.example>", replies.RELAY_DENIED),  # source route ignored, still remote
    ("<someone%remote.example@local.test>", replies.NO_SUCH_USER),  # % is only a local-part character
    ("<remote.example!someone@local.test>", replies.NO_SUCH_USER),
    ('<"someone@remote.example"@local.test>', replies.QUOTED_LOCAL_PART),
    ("<someone@remote.example@local.test>", replies.BAD_RECIPIENT_SYNTAX),
    ("someone@remote.example@local.test", replies.BAD_RECIPIENT_SYNTAX),
    ("<someone@[192.0.2.1]>", replies.RELAY_DENIED),
    ("<@remote.example:alice@local.test>", replies.RECIPIENT_OK),  # the route is ignored: local delivery
    ("<alice@local.test.>", replies.BAD_RECIPIENT_SYNTAX),  # a trailing dot does not parse
    ("<someone@remote.example.>", replies.BAD_RECIPIENT_SYNTAX),
]


def test_no_relay_tricks_for_strangers(untrusted: RunningIngress) -> None:
    # One ingress for all cases (a session each): starting one per case would triple this file's run time.
    results = {address: rcpt_reply(untrusted, address) for address, _ in RELAY_TRICKS}
    assert results == {address: str(reply) for address, reply in RELAY_TRICKS}


def test_source_routed_local_recipient_is_queued_without_route(untrusted: RunningIngress, namespace: str) -> None:
    with untrusted.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("sender@remote.example")
        assert client.rcpt("<@remote.example:alice@local.test>")[0] == 250
        assert client.data(SIMPLE_MESSAGE)[0] == 250
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == (ALICE,)


def test_trusted_network_may_relay(ingress: RunningIngress, namespace: str) -> None:
    assert rcpt_reply(ingress, "<someone@remote.example>") == str(replies.RECIPIENT_OK)
    assert rcpt_reply(ingress, "<nobody@LOCAL.test>") == str(replies.NO_SUCH_USER)  # a local domain is never relayed


def test_catch_all_accepts_any_local_part(untrusted: RunningIngress, namespace: str) -> None:
    run_store(namespace, lambda store: store.accounts.add_alias("@local.test", [ALICE]))
    assert rcpt_reply(untrusted, "<anything@local.test>") == str(replies.RECIPIENT_OK)
    assert rcpt_reply(untrusted, "<Alias@LOCAL.test>") == str(replies.RECIPIENT_OK)


def test_authenticated_user_may_relay_and_use_own_addresses_only(untrusted: RunningIngress, namespace: str) -> None:
    with untrusted.smtp("smtps") as client:
        client.login(ALICE, PASSWORD)
        assert reply_text(*client.mail(BOB)) == str(replies.SENDER_NOT_OWNED)
        assert reply_text(*client.mail("<>")) == str(replies.SENDER_NOT_OWNED)
        assert reply_text(*client.mail("someone@remote.example")) == str(replies.SENDER_NOT_OWNED)
        assert reply_text(*client.mail("sales@local.test")) == str(replies.SENDER_OK)  # an alias pointing to alice
        client.rset()
        assert reply_text(*client.mail("ALICE@local.test")) == str(replies.SENDER_OK)
        assert reply_text(*client.rcpt("friend@remote.example")) == str(replies.RECIPIENT_OK)
        assert client.data(SIMPLE_MESSAGE)[0] == 250
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == ("friend@remote.example",)


def test_recipient_limit_keeps_earlier_recipients(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(max_recipients=2)
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("sender@remote.example")
        assert client.rcpt(ALICE)[0] == 250
        assert client.rcpt(BOB)[0] == 250
        assert reply_text(*client.rcpt("sales@local.test")) == str(replies.TOO_MANY_RECIPIENTS)
        assert client.data(SIMPLE_MESSAGE)[0] == 250
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).recipients == (ALICE, BOB)


def test_declared_size_over_limit_is_552_at_mail(ingress: RunningIngress) -> None:
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        too_big = ingress.settings.max_message_size + 1
        code, reply = client.mail("sender@remote.example", [f"SIZE={too_big}"])
    assert reply_text(code, reply) == str(replies.MESSAGE_TOO_BIG_DECLARED)


def test_oversized_data_without_size_is_552_and_session_goes_on(
    make_ingress: Callable[..., RunningIngress], accounts: None, namespace: str
) -> None:
    ingress = make_ingress(max_message_size=4096)
    body = b"Subject: big\r\n\r\n" + (b"z" * 100 + b"\r\n") * 2000
    with ingress.smtp() as client:
        client.ehlo("client.example.org")
        code, reply = send(client, "sender@remote.example", [ALICE], body)
        assert reply_text(code, reply) == str(replies.MESSAGE_TOO_BIG)
        code, _ = send(client, "sender@remote.example", [ALICE], SIMPLE_MESSAGE)
        assert code == 250
    assert len(read_queue(namespace)) == 1


def test_null_sender_is_accepted_from_strangers(untrusted: RunningIngress, namespace: str) -> None:
    with untrusted.smtp() as client:
        client.ehlo("client.example.org")
        code, _ = send(client, "<>", [ALICE], SIMPLE_MESSAGE)
    assert code == 250
    [message] = read_queue(namespace)
    assert Envelope.from_headers(message.headers).mail_from == ""


def test_non_ascii_address_needs_smtputf8(ingress: RunningIngress, namespace: str) -> None:
    async def add(store: Store) -> None:
        await store.accounts.add_user("jürgen@local.test", PASSWORD)

    run_store(namespace, add)
    with RawSMTP(ingress.port("smtp")) as raw:
        raw.reply()
        raw.command("EHLO client.example.org")
        assert raw.command("MAIL FROM:<sender@remote.example>") == str(replies.SENDER_OK)
        assert raw.command("RCPT TO:<jürgen@local.test>") == str(replies.NON_ASCII_WITHOUT_SMTPUTF8)
        raw.command("RSET")
        assert raw.command("MAIL FROM:<sender@remote.example> SMTPUTF8") == str(replies.SENDER_OK)
        assert raw.command("RCPT TO:<jürgen@local.test>") == str(replies.RECIPIENT_OK)


@pytest.mark.parametrize(
    ("address", "sender", "expected"),
    [
        ("<>", True, None),
        ("user@example.com", False, None),
        ("user@[192.0.2.1]", False, None),
        ("user@[IPv6:2001:db8::1]", False, None),
        ("user@[999.1.1.1]", False, replies.BAD_RECIPIENT_SYNTAX),
        ("user@-bad.example", True, replies.BAD_SENDER_SYNTAX),
        ("us\ter@example.com", False, replies.CONTROL_CHARACTERS),
        ("us\udcffer@example.com", False, replies.CONTROL_CHARACTERS),
        ("a" * 65 + "@example.com", False, replies.ADDRESS_TOO_LONG),
        ('"x@y"@example.com', False, replies.QUOTED_LOCAL_PART),
        ("jürgen@example.com", False, replies.NON_ASCII_WITHOUT_SMTPUTF8),
    ],
)
def test_check_address(address: str, sender: bool, expected: replies.Reply | None) -> None:
    assert check_address(address, sender=sender, smtputf8=False) == expected


def test_client_ip_and_trust() -> None:
    settings = load_settings(IngressSettings, trusted_networks="10.0.0.0/8, ::1/128")
    assert client_ip(("::ffff:10.1.2.3", 25, 0, 0)) == "10.1.2.3"
    assert is_trusted("10.1.2.3", settings.trusted_networks)
    assert is_trusted("::1", settings.trusted_networks)
    assert not is_trusted("127.0.0.1", settings.trusted_networks)
    assert load_settings(IngressSettings, trusted_networks="").trusted_networks == ()


def test_domain_fast_path_agrees_with_the_label_check() -> None:
    labels = ["a", "A9", "-a", "a-", "a-b", "x" * 63, "x" * 64, "", "ü", "xn--bcher-kva", "a_b", "1", "a\n", " a"]
    domains = [".".join(parts) for parts in itertools.product(labels, repeat=2)] + labels
    domains += [d + "." for d in domains] + [d + ".." for d in labels] + ["[192.0.2.1]", "[IPv6:::1]", "[x]"]
    domains += [".".join(["a" * 63] * 4), ".".join(["a"] * 200), "-", ".", ""]
    for domain in domains:
        assert policy.valid_domain(domain) == policy._valid_domain(domain), repr(domain)


def test_helo_names() -> None:
    assert valid_helo("mail.example.org") and valid_helo("MY_PC") and valid_helo("[192.0.2.1]")
    assert not valid_helo("evil)(x") and not valid_helo("a b") and not valid_helo("bücher.example")
