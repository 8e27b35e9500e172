"""A local DNS server with the records of the inbound-check tests (SPF, DMARC, DKIM keys), and a DKIM signer."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.delivery.dnsserver import DNSServer, Zone

SELECTOR = "sel1"


@dataclass
class SigningKey:
    domain: str
    selector: str
    private_pem: bytes
    public_b64: str

    def sign(self, message: bytes) -> bytes:
        """The message with a relaxed/relaxed DKIM-Signature on top (dkimpy, as a sending MTA would)."""
        signature: bytes = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject"],
        )
        return signature + message

    def arc_seal(self, message: bytes, authserv_id: str = "relay.signed.test") -> bytes:
        """The message as a forwarder passes it on: its own Authentication-Results: and an ARC set (i=1) on top."""
        results = f"Authentication-Results: {authserv_id}; spf=pass smtp.mailfrom=origin.test\r\n".encode()
        arc_set: list[bytes] = dkim.arc_sign(
            results + message, self.selector.encode(), self.domain.encode(), self.private_pem, authserv_id.encode()
        )
        return b"".join(arc_set) + results + message

    def txt(self) -> str:
        """The key record in zone-file text: quoted strings of at most 255 characters (RFC 6376 §3.6.2.2)."""
        text = f"v=DKIM1; k=rsa; p={self.public_b64}"
        return " ".join(f'"{text[i : i + 250]}"' for i in range(0, len(text), 250))


def make_key(domain: str, selector: str = SELECTOR) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(domain, selector, private, base64.b64encode(public).decode())


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return make_key("signed.test")


@pytest.fixture
def inbound_zone(signing_key: SigningKey) -> Zone:
    """pass.test passes SPF from 127.0.0.1; fail/soft fail it; reject.test and quarantine.test publish DMARC."""
    zone = Zone()
    zone.add("pass.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    zone.add("fail.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    zone.add("soft.test", "TXT", '"v=spf1 ip4:192.0.2.1 ~all"')
    zone.add("client.pass.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    zone.add("reject.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    zone.add("_dmarc.reject.test", "TXT", '"v=DMARC1; p=reject"')
    zone.add("quarantine.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    zone.add("_dmarc.quarantine.test", "TXT", '"v=DMARC1; p=quarantine"')
    zone.add("signed.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    zone.add("_dmarc.signed.test", "TXT", '"v=DMARC1; p=reject; adkim=s"')
    zone.add(f"{signing_key.selector}._domainkey.signed.test", "TXT", signing_key.txt())
    zone.add("nothing.test", "A", "192.0.2.7")  # exists, publishes no SPF and no DMARC
    zone.silent.add("slow.test")
    zone.silent.add("_dmarc.slow.test")
    return zone


@pytest.fixture
def inbound_dns(inbound_zone: Zone) -> Iterator[DNSServer]:
    server = DNSServer(inbound_zone).start()
    yield server
    server.stop()
