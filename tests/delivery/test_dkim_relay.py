"""DKIM end to end: the delivery service relays to a real SMTP peer, which verifies with dkimpy against the public
keys the local DNS server serves, as a receiving MTA would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import dkim
import dns.resolver

from services.store import Store
from tests.delivery.conftest import TEST_SCHEDULE, Broker, metric
from tests.delivery.smtpsink import Behaviour, Sink
from tests.faults.hostile_mx import HostileMX, Script
from tests.helpers import ServiceProcess, wait_until


def verifier(dns_server: Any) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc, asking the test's DNS server (TXT strings joined, RFC 6376 §3.6.2.2)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return txt


def signatures(content: bytes) -> list[dict[bytes, bytes]]:
    parsed = dkim.DKIM(content)
    fields = [v for k, v in parsed.headers if k.lower() == b"dkim-signature"]
    return [dkim.util.parse_tag_value(v) for v in fields]


def verifies(content: bytes, dns_server: Any, index: int) -> bool:
    try:
        return bool(dkim.DKIM(content).verify(idx=index, dnsfunc=verifier(dns_server)))
    except dkim.DKIMException:  # a body hash that does not match raises (dkim.verify() catches it the same way)
        return False


async def publish_keys(store: Store, zone: Any) -> None:
    await store.accounts.add_domain("example.test")
    for selector, algorithm in (("r1", "rsa"), ("e1", "ed25519")):
        key = await store.dkim.generate("example.test", selector, algorithm)
        # The zone line `postroom dkim generate` prints, as the operator pastes it into the zone.
        name, _, strings = key.zone_line.partition(" IN TXT ")
        zone.add(name, "TXT", strings)


def message(sender: str, subject: str) -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: <bob@remote.test>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\nDate: Wed, 2 Dec 2026 13:00:00 +0000\r\n\r\n"
        "Hello  there,  \r\n\r\n.a line starting with a dot\r\n\r\n\r\n"
    ).encode()


async def test_relayed_mail_and_bounces_are_signed_and_verify(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    zone: Any,
    dns_server: Any,
    sinks: Callable[..., Sink],
    loopback_net: str,
) -> None:
    await publish_keys(store, zone)
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.1")
    sink = sinks(f"{loopback_net}.1", Behaviour(reject={"gone@remote.test"}))
    service = start_service(
        "delivery",
        POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE,
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_HOSTNAME="mx.example.test",  # bounces come from MAILER-DAEMON@mx.example.test
    )
    # Submitted with AUTH from a local domain: signed with both keys.
    await broker.publish(
        ["bob@remote.test"],
        message("alice@example.test", "signed"),
        sender="alice@example.test",
        client_address="198.51.100.7",
        auth_user="alice@example.test",
    )
    # From a foreign domain: relayed unsigned; its recipient refuses it, and the bounce (ours) is signed.
    await broker.publish(
        ["gone@remote.test"], message("carol@remote.test", "foreign"), sender="carol@remote.test",
        client_address="198.51.100.8",
    )  # fmt: skip
    # From a local domain but from a stranger on port 25: not ours to vouch for.
    await broker.publish(
        ["bob@remote.test"], message("alice@example.test", "forged"), sender="x@remote.test",
        client_address="198.51.100.9",
    )  # fmt: skip

    def by_subject(subject: str) -> bytes | None:
        return next((r.content for r in sink.received if f"Subject: {subject}".encode() in r.content), None)

    async def all_arrived() -> bool:
        return all(by_subject(s) is not None for s in ("signed", "forged", "Undelivered Mail"))

    await wait_until(all_arrived, what="the signed message, the forged one and the bounce at the peer")
    signed = by_subject("signed")
    assert signed is not None
    found = signatures(signed)
    assert [s[b"a"] for s in found] == [b"rsa-sha256", b"ed25519-sha256"]
    assert {s[b"d"] for s in found} == {b"example.test"} and [s[b"s"] for s in found] == [b"r1", b"e1"]
    assert all(s[b"c"] == b"relaxed/relaxed" for s in found)
    assert b"".join(found[0][b"h"].split()).split(b":").count(b"from") == 2  # From oversigned
    assert verifies(signed, dns_server, 0) and verifies(signed, dns_server, 1)
    tampered = signed.replace(b"Hello", b"Jello")
    assert not verifies(tampered, dns_server, 0) and not verifies(tampered, dns_server, 1)

    bounce = by_subject("Undelivered Mail")
    assert bounce is not None and b"From: Mail Delivery System <MAILER-DAEMON@mx.example.test>" in bounce
    assert [s[b"d"] for s in signatures(bounce)] == [b"example.test", b"example.test"]
    assert verifies(bounce, dns_server, 0) and verifies(bounce, dns_server, 1)

    assert signatures(by_subject("forged") or b"") == []
    assert all(r.rcpt_tos != ["gone@remote.test"] for r in sink.received)  # refused: only its bounce arrived

    async def counted() -> bool:
        return metric(service, 'postroom_delivery_dkim_signatures_total{result="signed"}') == 2

    await wait_until(counted, what="two signed messages counted")
    assert metric(service, 'postroom_delivery_dkim_signatures_total{result="skipped"}') == 2
    assert metric(service, 'postroom_delivery_dkim_signatures_total{result="failed"}') == 0


async def test_signing_off_sends_unsigned(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    zone: Any,
    dns_server: Any,
    sinks: Callable[..., Sink],
    loopback_net: str,
) -> None:
    await publish_keys(store, zone)
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.2")
    sink = sinks(f"{loopback_net}.2")
    start_service("delivery", POSTROOM_DNS_NAMESERVERS=dns_server.nameserver, POSTROOM_DKIM_SIGNING="false")
    await broker.publish(["bob@remote.test"], message("alice@example.test", "plain"), sender="alice@example.test")

    async def arrived() -> bool:
        return len(sink.received) == 1

    await wait_until(arrived, what="the message at the peer")
    assert signatures(sink.received[0].content) == []


async def test_peer_hanging_up_after_the_dot_gets_the_signed_message_once_on_retry(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    zone: Any,
    dns_server: Any,
    loopback_net: str,
) -> None:
    """The worst moment for a signed relay: the whole message sent, the connection closed before the reply. The
    retry signs again and the peer accepts it once; that copy verifies."""
    await publish_keys(store, zone)
    mx = HostileMX(f"{loopback_net}.3", [Script(hang_up_at="dot"), Script()]).start()
    try:
        start_service(
            "delivery",
            POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE,
            POSTROOM_TRANSPORT_MAP=f"remote.test={mx.route}",
            POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        )
        await broker.publish(["bob@remote.test"], message("alice@example.test", "retried"), sender="alice@example.test")

        async def accepted() -> bool:
            return len(mx.accepted()) == 1

        await wait_until(accepted, what="the retry accepted")
        assert [t.reply is None for t in mx.transactions] == [True, False]  # the first hung up after the dot
        [copy] = mx.accepted()
        assert verifies(copy.data, dns_server, 0) and verifies(copy.data, dns_server, 1)
        assert signatures(mx.transactions[0].data) != [] and len(mx.accepted()) == 1
    finally:
        mx.stop()


async def test_a_damaged_key_sends_the_message_unsigned_and_counts_it(
    start_service: Callable[..., ServiceProcess],
    broker: Broker,
    store: Store,
    zone: Any,
    dns_server: Any,
    sinks: Callable[..., Sink],
    loopback_net: str,
) -> None:
    await store.accounts.add_domain("example.test")
    await store.dkim.generate("example.test", "r1")
    broken = json.dumps({"algorithm": "rsa", "created": 0, "public_key": "AAAA", "private_key": "not a key"})
    await store.redis.hset(store.keys.dkim("example.test"), "r1", broken)
    zone.add("remote.test", "MX", "10 mx.remote.test.")
    zone.add("mx.remote.test", "A", f"{loopback_net}.4")
    sink = sinks(f"{loopback_net}.4")
    service = start_service("delivery", POSTROOM_DNS_NAMESERVERS=dns_server.nameserver)
    await broker.publish(["bob@remote.test"], message("alice@example.test", "unsigned"), sender="alice@example.test")

    async def arrived() -> bool:
        return len(sink.received) == 1

    await wait_until(arrived, what="the message at the peer, unsigned")
    assert signatures(sink.received[0].content) == []
    assert metric(service, 'postroom_delivery_dkim_signatures_total{result="failed"}') == 1
    assert service.log().count("dkim signing failed") == 1
