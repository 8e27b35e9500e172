"""Built-in ACME against a real ACME server on loopback (Debian's pebble): the store orders over HTTP-01 (answered on
its autoconfig listener), every TLS listener of the ingress and POP3 serves that certificate, a renewal reaches them
without a restart and without ending a session, a second replica does not order again, and pebble down is one log
line and a count while the listeners keep what they serve."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from services.store import Store
from services.store.acme import AcmeManager
from services.store.api import AdminServer
from services.store.clientconfig.app import create_autoconfig_app
from services.store.config import AcmeConfig
from services.store.metrics import ACME_ORDERS
from shared.netaddr import HostPort
from tests.certs import TestCA
from tests.delivery.dnsserver import DNSServer, Zone
from tests.faults.stack import metric
from tests.harness import Harness, ServiceProcess
from tests.helpers import free_port, wait_until_sync
from tests.redis_private import PrivateRedis
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


# -- in-process: the loop's decisions, one step at a time ----------------------------------------------------------


@pytest.fixture
async def autoconfig(store: Store, autoconfig_port: int) -> AsyncIterator[AdminServer]:
    """The store's autoconfig listener (which answers HTTP-01) on the port pebble checks."""
    server = AdminServer(
        create_autoconfig_app(store, "mx.acme.test", []), HostPort("127.0.0.1", autoconfig_port), drain_timeout=1
    )
    await server.start()
    yield server
    await server.stop()


def config(pebble: Pebble, *domains: str, renew_before: float = 30 * 86400) -> AcmeConfig:
    return AcmeConfig(
        directory=pebble.directory,
        domains=domains,
        email=None,
        ca_file=str(pebble.ca_file),
        renew_before=renew_before,
        check_interval=3600,
        retry_delay=60,
    )


def issued() -> float:
    return float(ACME_ORDERS.labels("issued")._value.get())


async def test_a_certificate_within_the_renew_window_is_ordered_again_and_one_outside_it_is_not(
    store: Store, pebble: Pebble, autoconfig: AdminServer
) -> None:
    manager = AcmeManager(store.acme, config(pebble, NAME))
    before = issued()
    assert await manager.step() == 0.0  # ordered: look again at once
    first = await store.acme.certificate()
    assert first is not None and first.domains == (NAME,) and issued() == before + 1
    assert await manager.step() == 3600  # valid for years: the next look after the check interval
    assert issued() == before + 1
    assert await store.acme.account() is not None
    # Pebble's certificates last 5 years: a window longer than that makes this one due.
    renewing = AcmeManager(store.acme, config(pebble, NAME, renew_before=10 * 365 * 86400))
    assert await renewing.step() == 0.0
    second = await store.acme.certificate()
    assert second is not None and second.version != first.version and issued() == before + 2
    assert await store.redis.get(store.keys.acme_lock) is None, "the lock is given back"
    assert not [key async for key in store.redis.scan_iter(match=store.keys.acme_challenge("*"))], "answers removed"


async def test_a_replica_orders_nothing_while_another_holds_the_lock(store: Store, pebble: Pebble) -> None:
    assert await store.acme.lock("another replica", 60)
    manager = AcmeManager(store.acme, config(pebble, NAME))
    before = issued()
    assert await manager.step() == 60  # wait a retry delay, then find the other replica's certificate
    assert issued() == before and await store.acme.certificate() is None
    assert await store.redis.get(store.keys.acme_lock) == b"another replica"


async def test_the_autoconfig_listener_answers_only_tokens_it_holds(store: Store, autoconfig: AdminServer) -> None:
    token = "a" * 43
    await store.acme.put_challenge(token, f"{token}.thumbprint", 60)
    base = f"http://127.0.0.1:{autoconfig.port}/.well-known/acme-challenge"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/{token}") as response:
            assert response.status == 200 and await response.text() == f"{token}.thumbprint"
        for other in ("b" * 43, "short", "a%2Fb" * 10):
            async with session.get(f"{base}/{other}") as response:
                assert response.status == 404


def written_pair(pair: tuple[str, str]) -> tuple[str, int]:
    """The certificate file's text and the key file's mode."""
    return Path(pair[0]).read_text(), Path(pair[1]).stat().st_mode


async def test_the_listeners_source_gives_each_stored_pair_once_and_nothing_while_redis_is_away(
    namespace: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    store = Store.connect(private_redis.url, namespace, socket_connect_timeout=1)
    source = store.certificate_source()
    try:
        assert await source.fetch() is None  # nothing ordered yet: the listeners keep their self-signed pair
        for renewal in range(2):
            cert, key = ca.issue(NAME)
            await store.acme.put_certificate(cert.read_text(), key.read_text(), (NAME,))
            pair = await source.fetch()
            assert pair is not None
            written, key_mode = written_pair(pair)
            assert written == cert.read_text(), renewal
            assert key_mode & 0o077 == 0, "the key file is the service's alone"
            assert await source.fetch() is None, "given once"
        private_redis.stop()
        assert await source.fetch() is None
        assert await source.fetch() is None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("service", "env", "named"),
    [
        ("store", {"POSTROOM_AUTOCONFIG_LISTEN": "127.0.0.1:8081"}, "POSTROOM_ACME_DOMAINS"),
        ("store", {"POSTROOM_ACME_DOMAINS": NAME}, "POSTROOM_AUTOCONFIG_LISTEN"),
        ("store", {"POSTROOM_ACME_DOMAINS": "bad..name", "POSTROOM_AUTOCONFIG_LISTEN": ":8081"}, "ACME_DOMAINS"),
        ("pop3", {"POSTROOM_TLS_CERT": "/c.pem", "POSTROOM_TLS_KEY": "/k.pem"}, "POSTROOM_ACME_DIRECTORY"),
    ],
)
def test_an_incomplete_acme_setting_stops_the_start_with_one_line(
    harness: Harness, service: str, env: dict[str, str], named: str
) -> None:
    result = harness.run(service, POSTROOM_ACME_DIRECTORY="https://acme.test/directory", **env)
    assert result.returncode == 2
    assert named in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout


async def test_an_account_the_ca_no_longer_knows_is_registered_again(
    store: Store, pebble: Pebble, autoconfig: AdminServer
) -> None:
    manager = AcmeManager(store.acme, config(pebble, NAME))
    assert await manager.step() == 0.0
    first = await store.acme.account()
    assert first is not None
    # A restarted pebble has forgotten every account, as a CA that removed ours would have.
    pebble.stop()
    pebble.start()
    before = issued()
    renewing = AcmeManager(store.acme, config(pebble, NAME, renew_before=10 * 365 * 86400))
    assert await renewing.step() == 0.0, "ordered with a new account, not failed"
    second = await store.acme.account()
    assert second is not None and second.uri != first.uri
    assert issued() == before + 1 and renewing.failures == 0
