"""Settings of the SMTP ingress (`POSTROOM_*` environment variables)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from services.store.addresses import AddressError, validate_domain
from services.store.passwords import Argon2Settings
from services.store.ratelimit import Rate, parse_rate
from shared.client_ports import SubmissionListenSettings
from shared.netaddr import HostPort, Network, parse_networks
from shared.proxy import ProxySettings
from shared.settings import (
    CommonSettings,
    Delay,
    Duration,
    ListenAddress,
    Nameservers,
    Networks,
    OptionalPath,
    OptionalUrl,
)
from shared.srs import SrsSettings
from shared.tls import ListenerTlsSettings

__all__ = ["IngressSettings", "Network", "parse_networks"]


def _send_limit(value: Any) -> Rate:
    return value if isinstance(value, Rate) else parse_rate(str(value), recipients=True)


def _optional_rate(value: Any) -> Rate | None:
    if value is None or isinstance(value, Rate):
        return value
    text = str(value).strip()
    return parse_rate(text) if text else None


def _zones(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, tuple | list) else str(value or "").replace(",", " ").split()
    zones = []
    for item in items:
        zone = str(item).strip().strip(".").lower()
        try:
            validate_domain(zone)
        except AddressError as exc:
            raise ValueError(f"bad zone {item!r}: {exc}") from None
        zones.append(zone)
    return tuple(dict.fromkeys(zones))


def _unless_blank(check: Callable[[str], str]) -> BeforeValidator:
    """A blank value is unset (None); any other, stripped, is what `check` makes of it (its ValueError, an
    AddressError too, names the variable through load_settings)."""

    def validate(value: object) -> str | None:
        text = str(value or "").strip()
        return check(text) if text else None

    return BeforeValidator(validate)


def _host_name(text: str) -> str:
    if not all(c.isalnum() or c in ".-_" for c in text):
        raise ValueError("must be a host name (letters, digits, dots, hyphens)")
    return text


class IngressSettings(
    CommonSettings, Argon2Settings, ProxySettings, SrsSettings, SubmissionListenSettings, ListenerTlsSettings
):
    """Listeners, TLS, relay policy, limits and timeouts of the ingress; an empty listen value disables it."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9101)
    smtp_listen: ListenAddress = HostPort("0.0.0.0", 25)
    # submission_listen, smtps_listen: SubmissionListenSettings (the store advertises them to mail clients).
    trusted_networks: Networks = parse_networks("127.0.0.0/8,::1/128")
    max_message_size: int = Field(default=26214400, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    # RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
    smtp_command_timeout: Duration = 300.0
    smtp_session_timeout: Duration = 1800.0
    smtp_max_connections: int = Field(default=2000, ge=1)
    smtp_max_connections_per_ip: int = Field(default=20, ge=1)
    smtp_max_errors: int = Field(default=20, ge=1)
    smtp_auth_failure_delay: Delay = 1.0
    smtp_auth_failure_delay_max: Duration = 30.0
    smtp_publish_timeout: Duration = 15.0
    # Messages over 1 MiB wait here (an unlinked temporary file) between DATA and their publish; unset: the system's
    # temporary directory. It needs room for the large messages in flight at once.
    smtp_spool_dir: OptionalPath = None
    smtp_drain_timeout: Duration = 30.0
    # Behind a load balancer speaking the PROXY protocol (v1 or v2): only POSTROOM_PROXY_TRUSTED_NETWORKS may
    # connect, every connection starts with its header, and the client address it carries is the one the per-IP
    # cap, the logs and the Received: header use (relay trust: POSTROOM_PROXY_TRUST_CLIENT_NETWORKS).
    smtp_proxy_protocol: bool = False
    # How long a connection from the balancer may take to send its header (it holds a global slot meanwhile).
    smtp_proxy_protocol_timeout: Duration = 10.0
    # Whether the Received: header names the authenticated account (RFC 5321 §4.4 leaves it to the operator; off,
    # the header says only that the client authenticated, "ESMTPA", as the account is nobody else's business).
    smtp_received_auth: bool = False
    # Whose postmaster `RCPT TO:<Postmaster>` reaches (RFC 5321 §4.1.1.3); unset: see postmaster.primary_domain.
    primary_domain: Annotated[str | None, _unless_blank(validate_domain)] = None
    # N > 1: N processes share the listening ports with SO_REUSEPORT (the kernel spreads connections); worker i
    # serves /metrics on the metrics port + i (each worker is its own scrape target; /readyz on the base port is
    # worker 0's). See docs/performance.md.
    smtp_workers: int = Field(default=1, ge=1, le=64)
    # Inbound authentication of unauthenticated mail on the MX listener (SPF, DKIM, DMARC, ARC; see
    # docs/deliverability.md); off: nothing is checked and no Authentication-Results: is added.
    inbound_checks: bool = True
    # Who the Authentication-Results: header says checked (RFC 8601 §2.5); unset: the hostname.
    authserv_id: Annotated[str | None, _unless_blank(_host_name)] = None
    # DMARC p=reject failures get 550 5.7.1 at the end of DATA; off, they are only marked like p=quarantine.
    dmarc_enforce: bool = True
    # DNS servers for the ingress's lookups (the inbound checks, the blocklists); unset: the system's resolver.
    dns_nameservers: Nameservers = ()
    # Per DNS lookup of the checks; a lookup that fails or times out makes its check temperror, never a rejection.
    inbound_dns_timeout: Duration = 5.0
    # DNS answers kept (each for its TTL) by the checks' resolver.
    inbound_dns_cache_size: int = Field(default=10000, ge=1)

    # Send limits (limits.py), shared by every replica through Redis: messages (and recipients) an authenticated
    # account may send per period, unless its own limit says otherwise (`postroom user update --send-limit`).
    send_limit: Annotated[Rate, BeforeValidator(_send_limit), NoDecode] = parse_rate("500/1h")
    # Connections per client address (IPv4, or IPv6 /64) on port 25; unset: no limit. Trusted networks exempt.
    mx_connection_rate: Annotated[Rate | None, BeforeValidator(_optional_rate), NoDecode] = None
    # DNS blocklists asked at connect on port 25 (dnsbl.py); empty: none.
    dnsbl_zones: Annotated[tuple[str, ...], BeforeValidator(_zones), NoDecode] = ()
    # A blocklist that has not answered by then counts as not listing the client (the mail is not held up).
    dnsbl_timeout: Duration = 3.0
    # rspamd's HTTP address (rspamd.py), e.g. http://127.0.0.1:11333; unset: no content filter.
    rspamd_url: OptionalUrl = None
    # Also filter what authenticated users send on 587/465 (port 25 is always filtered when the URL is set).
    rspamd_submission: bool = False
    rspamd_timeout: Duration = 20.0
    # rspamd unreachable, failing or slower than the timeout: answer 451 (tempfail) or let the message through.
    rspamd_failure: Literal["tempfail", "accept"] = "tempfail"

    @model_validator(mode="after")
    def _proxy_networks(self) -> Self:
        self.require_proxy_networks(self.smtp_proxy_protocol, "POSTROOM_SMTP_PROXY_PROTOCOL")
        return self
