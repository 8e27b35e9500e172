"""DNS blocklists at connect on port 25, answered by a local DNS server (tests/delivery/dnsserver.py)."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest

from services.smtp_ingress import metrics, replies
from services.smtp_ingress.dnsbl import classify, reversed_name
from shared.netaddr import HostPort
from tests.delivery.dnsserver import DNSServer, Zone
from tests.helpers import client_tls
from tests.smtp_ingress.conftest import ALICE, BOB, PASSWORD, SIMPLE_MESSAGE, RunningIngress

ZONES = "bl.test,refuses.test,down.test,clean.test"


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    zone = Zone()
    zone.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    zone.add("1.0.0.127.bl.test", "TXT", '"listed for testing"')
    # Spamhaus's "your query was refused" (e.g. through a public resolver): no listing.
    zone.add("1.0.0.127.refuses.test", "A", "127.255.255.254")
    zone.silent.add("1.0.0.127.down.test")
    zone.add("1." + "0." * 31 + "bl.test", "A", "127.0.0.4")  # ::1, in nibbles
    server = DNSServer(zone).start()
    yield server
    server.stop()


def _count(zone: str, result: str) -> float:
    return float(metrics.DNSBL.labels(zone, result)._value.get())


def _ingress(make: Callable[..., RunningIngress], dns: DNSServer, **overrides: object) -> RunningIngress:
    settings = {"dnsbl_zones": ZONES, "dns_nameservers": dns.nameserver, "dnsbl_timeout": 0.5}
    settings.setdefault("trusted_networks", "")
    return make(**{**settings, **overrides})


def test_reversed_names() -> None:
    assert reversed_name("192.0.2.99") == "99.2.0.192"
    assert reversed_name("::ffff:192.0.2.99") == "99.2.0.192"
    assert reversed_name("2001:db8::1") == "1." + "0." * 23 + "8.b.d.0.1.0.0.2"
    assert reversed_name("not an address") is None


def test_answers_that_list_and_answers_that_refuse() -> None:
    assert classify(["127.0.0.2"]) == "listed"
    assert classify(["127.0.0.11", "127.255.255.254"]) == "listed"
    assert classify(["127.255.255.252"]) == "refused"
    assert classify(["198.51.100.7"]) == "refused"  # a resolver that answers names that do not exist


def test_a_listed_client_is_refused_at_mail(
    make_ingress: Callable[..., RunningIngress], accounts: None, dns: DNSServer
) -> None:
    ingress = _ingress(make_ingress, dns)
    listed, refused, error = (
        _count("bl.test", "listed"),
        _count("refuses.test", "refused"),
        _count("down.test", "error"),
    )
    with ingress.smtp("smtp") as client:
        assert client.ehlo("client.example.org")[0] == 250  # the greeting and EHLO are not held up
        code, text = client.mail("someone@remote.test")
    assert (code, text.decode()) == (554, str(replies.dnsbl_listed("127.0.0.1", "bl.test"))[4:])
    assert b"listed at bl.test" in text
    assert _count("bl.test", "listed") == listed + 1
    assert _count("refuses.test", "refused") == refused + 1  # 127.255.255.x: ignored and counted
    assert _count("down.test", "error") == error + 1  # no answer within POSTROOM_DNSBL_TIMEOUT: ignored
    # dnspython's cache answers the next connection: bl.test is asked once for the address.
    with ingress.smtp("smtp") as client:
        client.ehlo("client.example.org")
        assert client.mail("someone@remote.test")[0] == 554
    assert dns.queries.count(("1.0.0.127.bl.test", "A")) == 1


def test_refusals_and_timeouts_alone_let_mail_through(
    make_ingress: Callable[..., RunningIngress], accounts: None, dns: DNSServer
) -> None:
    ingress = _ingress(make_ingress, dns, dnsbl_zones="refuses.test,down.test,clean.test")
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], SIMPLE_MESSAGE) == {}


def test_trusted_clients_are_never_checked(
    make_ingress: Callable[..., RunningIngress], accounts: None, dns: DNSServer
) -> None:
    ingress = _ingress(make_ingress, dns, trusted_networks="127.0.0.0/8")
    with ingress.smtp("smtp") as client:
        assert client.sendmail("someone@remote.test", [BOB], SIMPLE_MESSAGE) == {}
    assert dns.queries == []


def test_authenticated_sessions_are_not_refused(
    make_ingress: Callable[..., RunningIngress], accounts: None, dns: DNSServer
) -> None:
    ingress = _ingress(make_ingress, dns)
    with ingress.smtp("smtp") as client:
        client.starttls(context=client_tls())
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [BOB], SIMPLE_MESSAGE) == {}
    # The submission ports never ask.
    with ingress.smtp("smtps") as client:
        client.login(ALICE, PASSWORD)
        assert client.mail(ALICE)[0] == 250
    assert all(name.startswith("1.0.0.127.") for name, _ in dns.queries)


def test_ipv6_clients_are_looked_up_by_nibbles(
    make_ingress: Callable[..., RunningIngress], accounts: None, dns: DNSServer
) -> None:
    try:
        ingress = _ingress(make_ingress, dns, smtp_listen=HostPort("::1", 0))
    except Exception as exc:  # no IPv6 loopback on this machine
        pytest.skip(f"cannot listen on [::1]: {exc}")
    with smtplib.SMTP("::1", ingress.port("smtp"), timeout=10) as client:
        client.ehlo("client.example.org")
        code, text = client.mail("someone@remote.test")
    assert code == 554 and b"[::1] listed at bl.test" in text
