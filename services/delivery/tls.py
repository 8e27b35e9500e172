"""Outbound TLS: the client contexts, built once, and the TLS policy each next hop gets.

The one place that decides how a next hop is secured: the relay host with credentials gets verified TLS; an MX
host with DANE records validated by DNSSEC (RFC 7672) gets mandatory TLS whose certificate must match them; an MX of
a domain whose MTA-STS policy (RFC 8461) is in enforce mode gets verified TLS (system CAs plus those of
`POSTROOM_DELIVERY_TLS_CA_FILE`) for its host name; every other MX host gets opportunistic STARTTLS (RFC 7435).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from services.delivery.dane import DanePolicy

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
    `server_name`: SNI, and the name the certificate must carry when `required` with a verifying context.
    `dane`: the TLSA records the certificate must match instead (the context then checks nothing itself).
    `policy`: what decided this (relay, dane, mta-sts, none), for metrics and TLS-RPT.
    """

    context: ssl.SSLContext
    server_name: str
    required: bool = False
    implicit: bool = False
    dane: DanePolicy | None = None
    policy: str = "none"


class OutboundTLS:
    """The contexts, made once at start (the CA bundle is read then), and the policy for each kind of next hop."""

    def __init__(self, ca_file: str | None = None, policy_ca_file: str | None = None) -> None:
        self.opportunistic = opportunistic_context()
        self.verified = verified_context(ca_file)
        # For MTA-STS: the policy host's HTTPS and the MX hosts' STARTTLS (POSTROOM_DELIVERY_TLS_CA_FILE).
        self.policy_verified = verified_context(policy_ca_file)

    def for_dane(self, host: str, dane: DanePolicy) -> HopTLS:
        """DANE: TLS is mandatory; the certificate is checked against the TLSA records after the handshake (with
        none usable, the session is encrypted but unauthenticated, RFC 7672 §2.2)."""
        return HopTLS(self.opportunistic, host, required=True, dane=dane, policy="dane")

    def for_sts(self, host: str) -> HopTLS:
        """An MX host of a domain with an MTA-STS policy in enforce mode: verified TLS for the MX host's name."""
        return HopTLS(self.policy_verified, host, required=True, policy="mta-sts")

    def for_mx(self, host: str) -> HopTLS:
        """An MX or transport-map next hop: opportunistic STARTTLS."""
        return HopTLS(self.opportunistic, host)

    def for_relay(self, configured_host: str, authenticate: bool, implicit: bool) -> HopTLS:
        """The relay host. With credentials to send, its certificate must verify for the host name as configured
        (not a name learnt from DNS, which an attacker on the path could answer): Postfix's `secure` level with
        `smtp_tls_secure_cert_match = nexthop`."""
        if authenticate:
            return HopTLS(self.verified, configured_host, required=True, implicit=implicit, policy="relay")
        return HopTLS(self.opportunistic, configured_host, implicit=implicit)
