"""Relay credentials go only over TLS that verifies: a real relay host (aiosmtpd) on loopback with a certificate from
a test CA, requiring AUTH, and what it saw on the wire."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.delivery.config import DeliverySettings
from services.delivery.outcome import Status
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.tls import self_signed_pair
from tests.certs import TestCA, server_context
from tests.delivery.relayhost import PASSWORD, USERNAME, RelayHost
from tests.delivery.test_remote import remote_for, send
from tests.harness import Harness

# The relay without STARTTLS offers AUTH in the clear on purpose (the client alone must refuse it).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

RELAY_NAME = "relay.test"
CREDENTIALS = {"relay_username": USERNAME, "relay_password": PASSWORD}


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def relays() -> Iterator[Callable[..., RelayHost]]:
    started: list[RelayHost] = []

    def start(*args: Any, **kwargs: Any) -> RelayHost:
        relay = RelayHost(*args, **kwargs).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay_address(zone: Any, loopback_net: str) -> str:
    """relay.test's address in the test DNS: the relay host is configured by name, as its certificate says."""
    address = f"{loopback_net}.40"
    zone.add(RELAY_NAME, "A", address)
    return address


def assert_no_credentials_in_clear(relay: RelayHost) -> None:
    clear = relay.plaintext().upper()
    assert b"AUTH" not in clear, clear
    assert PASSWORD.encode() not in clear


async def test_starttls_with_a_verified_certificate_authenticates_and_delivers(
    ca: TestCA, relays: Any, relay_address: str, dns_server: Any
) -> None:
    relay = relays(relay_address, 587, starttls=server_context(*ca.issue(RELAY_NAME)))
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:587", relay_tls_ca_file=str(ca.ca_file), **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert result.status is Status.DELIVERED, result
    [got] = relay.received
    assert got.auth == USERNAME and got.tls
    assert "AUTH" in relay.commands(tls=True)
    assert_no_credentials_in_clear(relay)
    assert relay.commands(tls=False) == ["EHLO", "STARTTLS"]


async def test_relay_without_starttls_gets_no_credentials_and_no_message(
    relays: Any, relay_address: str, dns_server: Any
) -> None:
    """It even offers AUTH in the clear: before, the client took the offer (AUTH PLAIN in plaintext)."""
    relay = relays(relay_address, 587)
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:587", **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.4"), result
    assert "offers no STARTTLS" in result.diagnostic and "credentials not sent" in result.diagnostic
    assert relay.received == []
    assert_no_credentials_in_clear(relay)
    assert "MAIL" not in relay.commands(tls=False)


@pytest.mark.parametrize("certificate", ["self-signed", "wrong name"])
async def test_relay_certificate_that_does_not_verify_gets_no_credentials(
    certificate: str, ca: TestCA, relays: Any, relay_address: str, dns_server: Any, tmp_path: Path
) -> None:
    if certificate == "self-signed":
        cert, key = self_signed_pair(RELAY_NAME, tmp_path)
    else:
        cert, key = ca.issue("other.test")
    relay = relays(relay_address, 587, starttls=server_context(cert, key))
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:587", relay_tls_ca_file=str(ca.ca_file), **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.5"), result
    assert f"certificate not verified for {RELAY_NAME}" in result.diagnostic
    assert relay.received == []
    assert_no_credentials_in_clear(relay)
    assert "AUTH" not in relay.commands(tls=True)
    # No second try in plaintext after the failed handshake.
    assert relay.commands(tls=False) == ["EHLO", "STARTTLS"]


async def test_ca_file_is_what_makes_the_relay_trusted(
    ca: TestCA, relays: Any, relay_address: str, dns_server: Any
) -> None:
    """The certificate that verifies with POSTROOM_RELAY_TLS_CA_FILE does not against the system CAs alone."""
    relay = relays(relay_address, 587, starttls=server_context(*ca.issue(RELAY_NAME)))
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:587", **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.5"), result
    assert relay.received == [] and "AUTH" not in relay.commands(tls=True)


async def test_implicit_tls_on_465_authenticates_and_delivers(
    ca: TestCA, relays: Any, relay_address: str, dns_server: Any
) -> None:
    relay = relays(relay_address, 465, implicit=server_context(*ca.issue(RELAY_NAME)))
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:465", relay_tls_ca_file=str(ca.ca_file), **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert result.status is Status.DELIVERED, result
    [got] = relay.received
    assert got.auth == USERNAME
    assert relay.plaintext() == b"", "nothing at all in the clear on an implicit TLS port"
    assert {"EHLO", "AUTH", "MAIL"} <= set(relay.commands(tls=True))
    assert "STARTTLS" not in relay.commands(tls=True)


async def test_implicit_tls_with_a_certificate_that_does_not_verify_gets_no_credentials(
    ca: TestCA, relays: Any, relay_address: str, dns_server: Any
) -> None:
    relay = relays(relay_address, 465, implicit=server_context(*ca.issue("other.test")))
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]:465", relay_tls_ca_file=str(ca.ca_file), **CREDENTIALS)
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert (result.status, result.enhanced) == (Status.TEMPORARY, "4.7.5"), result
    assert relay.received == [] and relay.wire.chunks == []


async def test_implicit_tls_on_another_port_when_asked(
    ca: TestCA, relays: Any, relay_address: str, dns_server: Any
) -> None:
    relay = relays(relay_address, 2465, implicit=server_context(*ca.issue(RELAY_NAME)))
    remote = remote_for(
        dns_server,
        relay_host=f"[{RELAY_NAME}]:2465",
        relay_implicit_tls="true",
        relay_tls_ca_file=str(ca.ca_file),
        **CREDENTIALS,
    )
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert result.status is Status.DELIVERED, result
    assert relay.received[0].auth == USERNAME and relay.plaintext() == b""


async def test_without_credentials_relay_tls_stays_opportunistic(
    relays: Any, relay_address: str, dns_server: Any, tmp_path: Path
) -> None:
    """No credentials to protect: a self-signed certificate is used as it is, as towards any MX (RFC 7435)."""
    relay = relays(
        relay_address, 25, starttls=server_context(*self_signed_pair(RELAY_NAME, tmp_path)), require_auth=False
    )
    remote = remote_for(dns_server, relay_host=f"[{RELAY_NAME}]")
    [result] = await send(remote, "anywhere.test", "u@anywhere.test")
    assert result.status is Status.DELIVERED, result
    [got] = relay.received
    assert got.tls and got.auth is None


def test_relay_settings(tmp_path: Path, ca: TestCA) -> None:
    settings = load_settings(DeliverySettings, relay_host="[relay.test]:465", relay_tls_ca_file=str(ca.ca_file))
    assert settings.relay_uses_implicit_tls and not settings.relay_authenticates
    assert not load_settings(DeliverySettings, relay_host="[relay.test]:587").relay_uses_implicit_tls
    assert not load_settings(
        DeliverySettings, relay_host="[r.test]:465", relay_implicit_tls="false"
    ).relay_uses_implicit_tls
    assert load_settings(DeliverySettings, relay_host="[r.test]:25", relay_implicit_tls="yes").relay_uses_implicit_tls
    assert load_settings(DeliverySettings, relay_username="", relay_password="").relay_authenticates is False


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"relay_tls_ca_file": "/nonexistent/ca.pem"}, "POSTROOM_RELAY_TLS_CA_FILE"),
        ({"relay_tls_ca_file": "NOT-PEM"}, "POSTROOM_RELAY_TLS_CA_FILE"),
        ({"relay_username": "someone"}, "POSTROOM_RELAY_PASSWORD"),
        ({"relay_password": "secret"}, "POSTROOM_RELAY_PASSWORD"),
        ({"relay_implicit_tls": "perhaps"}, "POSTROOM_RELAY_IMPLICIT_TLS"),
    ],
)
def test_bad_relay_settings_name_the_variable(overrides: dict[str, str], variable: str, tmp_path: Path) -> None:
    if overrides.get("relay_tls_ca_file") == "NOT-PEM":
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        overrides = {"relay_tls_ca_file": str(junk)}
    with pytest.raises(ConfigError, match=variable) as raised:
        load_settings(DeliverySettings, **overrides)
    assert "secret" not in str(raised.value)


def test_bad_ca_file_stops_the_service_at_start(harness: Harness, tmp_path: Path) -> None:
    done = harness.run("delivery", POSTROOM_RELAY_TLS_CA_FILE=str(tmp_path / "missing.pem"))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "POSTROOM_RELAY_TLS_CA_FILE" in line and "missing.pem" in line
