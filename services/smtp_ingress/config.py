"""Settings of the SMTP ingress (`POSTROOM_*` environment variables)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.store.passwords import Argon2Settings
from shared.netaddr import HostPort
from shared.settings import CommonSettings, Delay, Duration, ListenAddress, OptionalPath

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: Any) -> tuple[Network, ...]:
    """`127.0.0.0/8,::1/128` (comma or space separated); empty means no trusted network."""
    if isinstance(value, tuple | list):
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    items = str(value or "").replace(",", " ").split()
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ValueError(f"bad network: {exc}") from None


class IngressSettings(CommonSettings, Argon2Settings):
    """Listeners, TLS, relay policy, limits and timeouts of the ingress; an empty listen value disables it."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9101)
    smtp_listen: ListenAddress = HostPort("0.0.0.0", 25)
    submission_listen: ListenAddress = HostPort("0.0.0.0", 587)
    smtps_listen: ListenAddress = HostPort("0.0.0.0", 465)
    tls_cert: OptionalPath = None
    tls_key: OptionalPath = None
    trusted_networks: Annotated[tuple[Network, ...], NoDecode] = parse_networks("127.0.0.0/8,::1/128")
    max_message_size: int = Field(default=26214400, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    # RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
    smtp_command_timeout: Duration = 300.0
    smtp_session_timeout: Duration = 1800.0
    smtp_max_connections: int = Field(default=2000, ge=1)
    smtp_max_connections_per_ip: int = Field(default=20, ge=1)
    smtp_max_errors: int = Field(default=20, ge=1)
    smtp_auth_failure_delay: Delay = 1.0
    smtp_auth_failure_delay_max: Delay = 30.0
    smtp_publish_timeout: Duration = 15.0
    # Messages over 1 MiB wait here (an unlinked temporary file) between DATA and their publish; unset: the system's
    # temporary directory. It needs room for the large messages in flight at once.
    smtp_spool_dir: OptionalPath = None
    smtp_drain_timeout: Duration = 30.0
    # Behind a load balancer speaking the PROXY protocol (v1 or v2), every connection must start with its header;
    # the client address it carries is the one policy, caps and the Received: header use.
    smtp_proxy_protocol: bool = False
    # N > 1: N processes share the listening ports with SO_REUSEPORT (the kernel spreads connections); worker i
    # serves /metrics on the metrics port + i (each worker is its own scrape target; /readyz on the base port is
    # worker 0's). See docs/performance.md.
    smtp_workers: int = Field(default=1, ge=1, le=64)

    @field_validator("trusted_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> tuple[Network, ...]:
        return parse_networks(value)
