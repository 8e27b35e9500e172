"""Built-in ACME against a real ACME server on loopback (Debian's pebble): the store orders over HTTP-01 (answered on
its autoconfig listener), every TLS listener of the ingress and POP3 serves that certificate, a renewal reaches them
without a restart and without ending a session, a second replica does not order again, and pebble down is one log
line and a count while the listeners keep what they serve."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.delivery.dnsserver import DNSServer, Zone
from tests.faults.stack import metric
from tests.harness import ServiceProcess
from tests.helpers import free_port, wait_until_sync
from tests.store.pebble import Pebble

NAME, SECOND = "mail.acme.test", "pop.acme.test"
ISSUED, FAILED = 'result="issued"', 'result="failed"'
ORDERS = "postroom_store_acme_orders_total"


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    """The names of the certificate resolve to loopback, where the store's autoconfig listener answers HTTP-01."""
    zone = Zone()
    for name in (NAME, SECOND):
        zone.add(name, "A", "127.0.0.1")
    server = DNSServer(zone).start()
    yield server
    server.stop()


@pytest.fixture
def autoconfig_port() -> int:
    return free_port()


@pytest.fixture
def pebble(tmp_path: Path, dns: DNSServer, autoconfig_port: int) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble", autoconfig_port, dns.nameserver).start()
    yield server
    server.stop()


def acme_env(pebble: Pebble, autoconfig_port: int, *domains: str, **extra: str) -> dict[str, str]:
    return {
        "POSTROOM_ACME_DIRECTORY": pebble.directory,
        "POSTROOM_ACME_CA_FILE": str(pebble.ca_file),
        "POSTROOM_ACME_DOMAINS": ",".join(domains),
        "POSTROOM_ACME_EMAIL": "postmaster@acme.test",
        "POSTROOM_AUTOCONFIG_LISTEN": f"127.0.0.1:{autoconfig_port}",
        "POSTROOM_TLS_RELOAD_INTERVAL": "0.2s",
        **extra,
    }


def own_listeners() -> dict[str, str]:
    """A further store replica's listeners (on one machine, replicas cannot share ports)."""
    return {name: f"127.0.0.1:{free_port()}" for name in ("POSTROOM_ADMIN_LISTEN", "POSTROOM_AUTOCONFIG_LISTEN")}


def trusting(root: str) -> ssl.SSLContext:
    """A client that trusts only pebble's root: a handshake proves the served chain is pebble's. The listeners are
    reached at 127.0.0.1, so the names are checked from the certificate's SAN instead of by the handshake."""
    context = ssl.create_default_context(cadata=root)
    context.check_hostname = False
    return context


def certificate(der: bytes | None) -> x509.Certificate:
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served(service: ServiceProcess, listener: str, root: str) -> x509.Certificate:
    """The certificate a new session on `listener` gets: STARTTLS (smtp), STLS (pop3) or implicit TLS."""
    port, context = service.port(listener), trusting(root)
    if listener in ("smtp", "submission"):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.starttls(context=context)
            return certificate(smtp.sock.getpeercert(binary_form=True))  # type: ignore[union-attr]
    if listener == "pop3":
        pop3 = poplib.POP3("127.0.0.1", port, timeout=10)
        try:
            pop3.stls(context=context)
            return certificate(pop3.sock.getpeercert(binary_form=True))  # type: ignore[attr-defined]
        finally:
            pop3.quit()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return certificate(tls.getpeercert(binary_form=True))


def names(cert: x509.Certificate) -> set[str]:
    return set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def issuer(cert: x509.Certificate) -> str:
    return str(cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_listeners_serve_the_acme_certificate_and_its_renewal_without_dropping_sessions(
    pebble: Pebble, autoconfig_port: int, start_service: Callable[..., ServiceProcess]
) -> None:
    env = acme_env(pebble, autoconfig_port, NAME)
    store = start_service("store", **env)
    wait_until_sync(
        lambda: metric(store, ORDERS, ISSUED) == 1, 60, what=f"a certificate from pebble ({store.log_path})"
    )
    listeners = {"smtp": start_service("smtp_ingress", **env), "pop3": start_service("pop3", **env)}
    listeners |= {"submission": listeners["smtp"], "smtps": listeners["smtp"], "pop3s": listeners["pop3"]}
    root = pebble.root()
    first = {name: served(service, name, root) for name, service in listeners.items()}
    assert {cert.serial_number for cert in first.values()} == {first["smtp"].serial_number}, "one certificate"
    assert names(first["smtp"]) == {NAME}
    assert "Pebble" in issuer(first["smtp"])

    # Sessions open across the renewal: SMTP after STARTTLS, POP3 over implicit TLS.
    smtp = smtplib.SMTP("127.0.0.1", listeners["smtp"].port("smtp"), timeout=10)
    smtp.starttls(context=trusting(root))
    smtp.ehlo("client.acme.test")
    pop3 = poplib.POP3_SSL("127.0.0.1", listeners["pop3"].port("pop3s"), timeout=10, context=trusting(root))

    # The names change (a renewal by another reason): the store, restarted with them, orders at once.
    store.stop()
    renewing = start_service("store", **{**env, "POSTROOM_ACME_DOMAINS": f"{NAME},{SECOND}"})
    wait_until_sync(lambda: metric(renewing, ORDERS, ISSUED) == 1, 60, what=f"the renewal ({renewing.log_path})")

    def all_serve_the_renewal() -> bool:
        return all(names(served(service, name, root)) == {NAME, SECOND} for name, service in listeners.items())

    wait_until_sync(all_serve_the_renewal, 20, what="every listener serving the renewed certificate")
    assert smtp.noop()[0] == 250
    assert "USER" in pop3.capa()  # still the same session, answering (NOOP needs a login: RFC 1939)
    smtp.quit()
    pop3.quit()
    assert all(service.alive() for service in listeners.values())

    # A second replica finds the certificate valid: it looks, and orders nothing.
    renewed = served(listeners["smtps"], "smtps", root)
    replica = start_service("store", **{**env, "POSTROOM_ACME_DOMAINS": f"{NAME},{SECOND}", **own_listeners()})
    expiry = "postroom_store_acme_certificate_expiry_timestamp_seconds"
    ends = renewed.not_valid_after_utc.timestamp()
    wait_until_sync(lambda: metric(replica, expiry) == ends, 20, what="the second replica's look")
    assert metric(replica, ORDERS) == 0

    # Pebble down while a renewal is due: each failed order is one line and one count; nothing else changes.
    pebble.stop()
    due = {
        **env,
        "POSTROOM_ACME_DOMAINS": f"{NAME},{SECOND}",
        "POSTROOM_ACME_RENEW_BEFORE": "100000d",
        **own_listeners(),
    }
    failing = start_service("store", **due, POSTROOM_ACME_RETRY_DELAY="0.1s", POSTROOM_ACME_CHECK_INTERVAL="0.2s")
    wait_until_sync(lambda: metric(failing, ORDERS, FAILED) >= 2, 30, what="failed orders counted")
    lines = failing.log().splitlines()
    failures = [line for line in lines if "acme order failed" in line]
    assert len(failures) >= 2 and metric(failing, ORDERS, ISSUED) == 0
    assert not any("Traceback" in line for line in lines)
    assert served(listeners["smtps"], "smtps", root).serial_number == renewed.serial_number
    assert served(listeners["pop3s"], "pop3s", root).serial_number == renewed.serial_number
