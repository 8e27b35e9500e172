"""Outbound TLS that a domain can require: MTA-STS (RFC 8461) and DANE (RFC 7672), with TLS-RPT (RFC 8460) counts.

Real parts on loopback: a DNS server (TXT, TLSA, the AD bit of a validating resolver), the policy host over HTTPS
on port 443 with a certificate from a test CA, MX hosts (aiosmtpd) with matching and mismatching certificates,
and the store's policy cache in Redis."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.delivery.config import DeliverySettings
from services.delivery.mtasts import MtaSts, parse_policy, txt_id
from services.delivery.mx import MailResolver
from services.delivery.outcome import RecipientOutcome, Status
from services.delivery.remote import RemoteDelivery
from services.delivery.tls import verified_context
from services.delivery.tlsrpt import TlsReporter, TlsResults, rua_addresses, utc_day
from services.store import Store
from shared.envelope import Envelope
from shared.settings import load_settings
from tests.certs import TestCA, server_context
from tests.delivery.relayhost import RelayHost
from tests.delivery.test_remote import send

DOMAIN = "sts.test"
MX = "mx.sts.test"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def mx_hosts() -> Iterator[Callable[..., RelayHost]]:
    """MX hosts that need no AUTH; `starttls` their certificate's context (None: no STARTTLS offered)."""
    started: list[RelayHost] = []

    def start(address: str, starttls: Any = None) -> RelayHost:
        host = RelayHost(address, 25, starttls=starttls, require_auth=False).start()
        started.append(host)
        return host

    yield start
    for host in started:
        host.stop()


@pytest.fixture
async def policy_host(ca: TestCA, zone: Any, loopback_net: str) -> AsyncIterator[Callable[..., Any]]:
    """`await serve(text, domain)`: the policy of `domain` on https://mta-sts.<domain>/ (port 443)."""
    runners: list[web.AppRunner] = []

    async def serve(text: str, domain: str = DOMAIN, status: int = 200) -> None:
        address = f"{loopback_net}.{80 + len(runners)}"
        zone.add(f"mta-sts.{domain}", "A", address)

        async def policy(_: web.Request) -> web.Response:
            return web.Response(text=text, content_type="text/plain", status=status)

        app = web.Application()
        app.router.add_get("/.well-known/mta-sts.txt", policy)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, 443, ssl_context=server_context(*ca.issue(f"mta-sts.{domain}"))).start()
        runners.append(runner)

    yield serve
    for runner in runners:
        await runner.cleanup()


def remote(dns_server: Any, store: Store, ca: TestCA, results: TlsResults | None = None) -> RemoteDelivery:
    settings = load_settings(
        DeliverySettings,
        dns_nameservers=dns_server.nameserver,
        delivery_dns_timeout="1s",
        relay_connect_timeout="3s",
        relay_greeting_timeout="3s",
        relay_command_timeout="10s",
        hostname="mx.postroom.test",
        delivery_tls_ca_file=str(ca.ca_file),
    )
    resolver = MailResolver(settings.dns_nameservers, settings.delivery_dns_timeout)
    mta_sts = MtaSts(resolver, store.tls_policies, verified_context(settings.delivery_tls_ca_file), timeout=5)
    return RemoteDelivery(settings, resolver, mta_sts, results)


def publish_mx(zone: Any, address: str, *hosts: str) -> None:
    zone.add(DOMAIN, "MX", *(f"{10 * (i + 1)} {host}." for i, host in enumerate(hosts or (MX,))))
    for host in hosts or (MX,):
        zone.add(host, "A", address)


def enforce(*mx: str, mode: str = "enforce") -> str:
    return f"version: STSv1\r\nmode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + "max_age: 86400\r\n"


async def deliver(delivery: RemoteDelivery) -> RecipientOutcome:
    [result] = await send(delivery, DOMAIN, f"user@{DOMAIN}")
    if delivery.mta_sts is not None:
        await delivery.mta_sts.close()
    return result


# -- MTA-STS -----------------------------------------------------------------------------------------------------
async def test_an_enforced_policy_delivers_over_verified_tls_and_is_cached(
    ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, policy_host: Any, store: Store
) -> None:
    publish_mx(zone, f"{loopback_net}.1")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=20261202T1"')
    await policy_host(enforce(MX))
    mx = mx_hosts(f"{loopback_net}.1", server_context(*ca.issue(MX)))
    result = await deliver(remote(dns_server, store, ca))
    assert result.status is Status.DELIVERED, result
    [got] = mx.received
    assert got.tls
    cached = await store.tls_policies.cached_policy(DOMAIN)
    assert cached is not None and (cached["id"], cached["mode"], cached["mx"]) == ("20261202T1", "enforce", [MX])


@pytest.mark.parametrize("certificate", ["wrong name", "no STARTTLS"])
async def test_an_enforced_policy_sends_nothing_without_verified_tls(
    certificate: str,
    ca: TestCA,
    zone: Any,
    dns_server: Any,
    loopback_net: str,
    mx_hosts: Any,
    policy_host: Any,
    store: Store,
) -> None:
    publish_mx(zone, f"{loopback_net}.1")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=1"')
    await policy_host(enforce(MX))
    tls = server_context(*ca.issue("other.test")) if certificate == "wrong name" else None
    mx = mx_hosts(f"{loopback_net}.1", tls)
    result = await deliver(remote(dns_server, store, ca))
    expected = "4.7.5" if certificate == "wrong name" else "4.7.4"
    assert (result.status, result.enhanced) == (Status.TEMPORARY, expected), result
    assert "nothing sent (mta-sts policy)" in result.diagnostic
    assert mx.received == [] and "MAIL" not in mx.commands(tls=False) + mx.commands(tls=True)


async def test_an_enforced_policy_never_uses_an_mx_it_does_not_list(
    ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, policy_host: Any, store: Store
) -> None:
    publish_mx(zone, f"{loopback_net}.1", "evil.attacker.test")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=1"')
    await policy_host(enforce("*.sts.test"))
    mx = mx_hosts(f"{loopback_net}.1", server_context(*ca.issue("evil.attacker.test")))
    result = await deliver(remote(dns_server, store, ca))
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.5"), result
    assert "matches its MTA-STS policy" in result.diagnostic
    assert mx.received == [] and mx.commands(tls=False) == []


async def test_testing_mode_and_no_policy_deliver_opportunistically(
    ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, policy_host: Any, store: Store
) -> None:
    """A testing policy only reports; a TXT record whose policy cannot be fetched (404) means no policy."""
    publish_mx(zone, f"{loopback_net}.1")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=1"')
    await policy_host(enforce(MX, mode="testing"))
    mx = mx_hosts(f"{loopback_net}.1", server_context(*ca.issue("other.test")))
    assert (await deliver(remote(dns_server, store, ca))).status is Status.DELIVERED

    other = "nopolicy.test"
    zone.add(other, "MX", f"10 {MX}.")
    zone.add(f"_mta-sts.{other}", "TXT", '"v=STSv1; id=1"')
    await policy_host("not found", domain=other, status=404)
    [result] = await send(remote(dns_server, store, ca), other, f"user@{other}")
    assert result.status is Status.DELIVERED, result
    assert len(mx.received) == 2


async def test_a_cached_enforce_policy_holds_when_the_policy_host_is_gone(
    ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, store: Store
) -> None:
    """RFC 8461 §5.1: a fetch that fails leaves the cached policy in force (here: a new id, no policy host)."""
    policy = parse_policy(DOMAIN, "old", enforce(MX), now=time.time())
    await store.tls_policies.cache_policy(DOMAIN, {**policy.__dict__, "mx": list(policy.mx)}, 3600)
    publish_mx(zone, f"{loopback_net}.1")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=new"')
    mx = mx_hosts(f"{loopback_net}.1", server_context(*ca.issue("other.test")))
    result = await deliver(remote(dns_server, store, ca))
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.5"), result
    assert mx.received == []


def test_policy_text_and_txt_records() -> None:
    policy = parse_policy(
        DOMAIN, "x", "version: STSv1\nmode: enforce\nmx: mail.sts.test\nmx: *.backup.test\nmax_age: 60\n", 0
    )
    assert policy.allows("MAIL.sts.test.") and policy.allows("a.backup.test")
    assert not policy.allows("a.b.backup.test") and not policy.allows("backup.test")
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: enforce\nmax_age: 1"):
        with pytest.raises(ValueError):
            parse_policy(DOMAIN, "x", bad, 0)
    assert txt_id(["v=STSv1; id=abc123;"]) == "abc123"
    assert txt_id(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none (§3.1)
    assert txt_id(["v=spf1 -all"]) is None


# -- DANE ----------------------------------------------------------------------------------------------------------
def tlsa_of(cert_path: Path) -> str:
    """`3 1 1` of a certificate: DANE-EE, its public key, SHA-256."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


@pytest.mark.parametrize("case", ["match", "mismatch", "unsigned", "no STARTTLS"])
async def test_dane_pins_the_mx_certificate_when_dnssec_validates(
    case: str, ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, store: Store, tmp_path: Path
) -> None:
    publish_mx(zone, f"{loopback_net}.1")
    cert, key = ca.issue("any-name.test")  # DANE-EE ignores names and CAs: the key is what counts
    (tmp_path / "other").mkdir()
    other, _ = TestCA(tmp_path / "other").issue("x.test")
    zone.add(f"_25._tcp.{MX}", "TLSA", tlsa_of(other if case == "mismatch" else cert))
    if case != "unsigned":
        zone.secure |= {DOMAIN, f"_25._tcp.{MX}"}
    mx = mx_hosts(f"{loopback_net}.1", None if case == "no STARTTLS" else server_context(cert, key))
    result = await deliver(remote(dns_server, store, ca))
    if case in ("match", "unsigned"):
        assert result.status is Status.DELIVERED, result
        assert [got.tls for got in mx.received] == [True]
    else:
        expected = "4.7.5" if case == "mismatch" else "4.7.4"
        assert (result.status, result.enhanced) == (Status.TEMPORARY, expected), result
        assert "nothing sent (dane policy)" in result.diagnostic
        assert mx.received == []


# -- TLS-RPT -------------------------------------------------------------------------------------------------------
async def test_tls_rpt_counts_sessions_and_queues_one_daily_report(
    ca: TestCA, zone: Any, dns_server: Any, loopback_net: str, mx_hosts: Any, policy_host: Any, store: Store
) -> None:
    publish_mx(zone, f"{loopback_net}.1")
    zone.add(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=1"')
    zone.add(f"_smtp._tls.{DOMAIN}", "TXT", '"v=TLSRPTv1; rua=mailto:tls-reports@sts.test,https://ignored.test/"')
    await policy_host(enforce(MX))
    mx_hosts(f"{loopback_net}.1", server_context(*ca.issue(MX)))
    results = TlsResults(store)
    delivery = remote(dns_server, store, ca, results)
    for _ in range(3):
        [result] = await send(delivery, DOMAIN, f"user@{DOMAIN}")
        assert result.status is Status.DELIVERED
    assert delivery.mta_sts is not None
    await delivery.mta_sts.close()
    await results.flush()

    queued: list[tuple[bytes, Envelope]] = []

    async def enqueue(body: bytes, envelope: Envelope) -> None:
        queued.append((body, envelope))

    resolver = delivery.resolver
    day = utc_day(time.time())
    assert await TlsReporter(store, resolver, enqueue, "mx.postroom.test", "a").send(day) == 1
    assert await TlsReporter(store, resolver, enqueue, "mx.postroom.test", "b").send(day) == 0  # sent once
    [(body, envelope)] = queued
    assert envelope.recipients == ("tls-reports@sts.test",) and envelope.mail_from == "postmaster@mx.postroom.test"
    message = message_from_bytes(body)
    assert message.get_content_type() == "multipart/report" and message.get_param("report-type") == "tlsrpt"
    [attachment] = [part for part in message.walk() if part.get_content_type() == "application/tlsrpt+gzip"]
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    report = json.loads(gzip.decompress(payload))
    [policy] = report["policies"]
    assert policy["policy"] == {"policy-type": "sts", "policy-domain": DOMAIN}
    assert policy["summary"] == {"total-successful-session-count": 3, "total-failure-session-count": 0}


def test_rua_addresses() -> None:
    assert rua_addresses(["v=TLSRPTv1; rua=mailto:a@x.test,mailto:b@y.test!10m"]) == ["a@x.test", "b@y.test"]
    assert rua_addresses(["v=spf1"]) == []
