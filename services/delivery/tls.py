"""Outbound TLS: the client contexts, built once, and the TLS policy each next hop gets.

The one place that decides how a next hop is secured: MX hops get opportunistic STARTTLS (RFC 7435), the relay host
with credentials verified TLS. MTA-STS (RFC 8461) and DANE (RFC 7672) policies for MX hops, with the extra CAs of
`POSTROOM_TLS_CA_FILE`, belong here too when they are built.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

SMTPS_PORT = 465  # RFC 8314 §7.3: "submissions", implicit TLS


def opportunistic_context() -> ssl.SSLContext:
    """STARTTLS without certificate checks, as MTAs do for opportunistic TLS (RFC 7435): encryption against
    passive listeners; a failed check would only make us fall back to plaintext anyway."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verified_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificate chain checked against the system CAs (plus those of `ca_file`, a PEM bundle), host name checked
    (RFC 6125 via Python's matcher: SAN dNSName with a left-most wildcard, or iPAddress for an address literal)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def check_ca_file(path: str) -> None:
    """Raise ValueError (for the settings validator) when `path` is not a readable PEM bundle of certificates."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA certificates from {path!r}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class HopTLS:
    """How one connection to a next hop is secured.

    `required`: verified TLS or no transaction at all (no plaintext fallback, no AUTH, no message): the relay host
    when credentials are configured (invariant 7 of docs/design.md). Otherwise TLS is opportunistic (RFC 7435).
    `implicit`: TLS from the first byte (RFC 8314 §3.3) instead of STARTTLS (RFC 3207).
    `server_name`: SNI, and the name the certificate must carry when `required`.
    """

    context: ssl.SSLContext
    server_name: str
    required: bool = False
    implicit: bool = False


class OutboundTLS:
    """The contexts, made once at start (the CA bundle is read then), and the policy for each kind of next hop."""

    def __init__(self, ca_file: str | None = None) -> None:
        self.opportunistic = opportunistic_context()
        self.verified = verified_context(ca_file)

    def for_mx(self, host: str) -> HopTLS:
        """An MX or transport-map next hop: opportunistic STARTTLS."""
        return HopTLS(self.opportunistic, host)

    def for_relay(self, configured_host: str, authenticate: bool, implicit: bool) -> HopTLS:
        """The relay host. With credentials to send, its certificate must verify for the host name as configured
        (not a name learnt from DNS, which an attacker on the path could answer): Postfix's `secure` level with
        `smtp_tls_secure_cert_match = nexthop`."""
        if authenticate:
            return HopTLS(self.verified, configured_host, required=True, implicit=implicit)
        return HopTLS(self.opportunistic, configured_host, implicit=implicit)
