"""DANE for SMTP (RFC 7672): TLSA records of an MX host, published under DNSSEC, pin the certificate it must show.

DANE applies only where DNSSEC vouches for the whole chain: the MX answer and the TLSA answer both validated (the
resolver set the AD bit). Then TLS is mandatory and the certificate must match a usable TLSA record; with records
but none usable, TLS is still mandatory but unauthenticated (§2.2). Usable here: DANE-EE(3), which pins the server's
own certificate or key, the kind almost every SMTP operator publishes. DANE-TA(2) needs the certificate chain the
server sent, which Python 3.11's ssl module does not expose; such records count as unusable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.delivery.mx import MailResolver

DANE_EE = 3
_DIGESTS = {0: None, 1: "sha256", 2: "sha512"}


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    matching: int
    data: bytes

    @property
    def usable(self) -> bool:
        return self.usage == DANE_EE and self.selector in (0, 1) and self.matching in _DIGESTS


@dataclass(frozen=True)
class DanePolicy:
    """The TLSA records of one MX host and port, validated by DNSSEC; `usable` the ones we can check."""

    host: str
    records: tuple[Tlsa, ...]

    @property
    def usable(self) -> tuple[Tlsa, ...]:
        return tuple(r for r in self.records if r.usable)

    def matches(self, certificate_der: bytes) -> bool:
        """True when the server's certificate matches a usable record (RFC 6698 §2.1)."""
        certificate = x509.load_der_x509_certificate(certificate_der)
        selected = {
            0: certificate_der,
            1: certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for record in self.usable:
            digest = _DIGESTS[record.matching]
            data = selected[record.selector]
            if (hashlib.new(digest, data).digest() if digest else data) == record.data:
                return True
        return False


async def lookup(resolver: MailResolver, host: str, port: int, mx_secure: bool) -> DanePolicy | None:
    """The DANE policy of `host`:`port`, or None when DANE does not apply (an insecure MX answer or TLSA answer, or
    no TLSA records). DNS errors propagate (TemporaryError): a TLSA lookup that fails must not silently downgrade."""
    if not mx_secure:
        return None
    answer = await resolver.lookup(f"_{port}._tcp.{host}", "TLSA")
    if not answer.secure or not answer.records:
        return None
    return DanePolicy(host, tuple(_record(r) for r in answer.records))


def _record(rdata: object) -> Tlsa:
    return Tlsa(
        int(getattr(rdata, "usage")),  # noqa: B009  (dnspython's TLSA rdata attributes, untyped)
        int(getattr(rdata, "selector")),  # noqa: B009
        int(getattr(rdata, "mtype")),  # noqa: B009
        bytes(getattr(rdata, "cert")),  # noqa: B009
    )


def describe(records: Sequence[Tlsa]) -> list[str]:
    """TLSA records as presentation text, for logs and TLS-RPT reports."""
    return [f"{r.usage} {r.selector} {r.matching} {r.data.hex()}" for r in records]
