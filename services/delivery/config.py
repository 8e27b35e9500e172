"""Settings of the delivery service (`POSTROOM_*` variables it reads beyond the common ones)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from services.delivery.tls import SMTPS_PORT, check_ca_file
from services.delivery.transport_map import Route, parse_route, parse_transport_map
from shared.netaddr import HostPort, parse_networks
from shared.settings import (
    DEFAULT_RETRY_SCHEDULE,
    CommonSettings,
    Delay,
    Duration,
    ListenAddress,
    Nameservers,
    Networks,
    OptionalDuration,
    OptionalPath,
    RetrySchedule,
)
from shared.srs import SrsSettings


class DeliverySettings(CommonSettings, SrsSettings):
    """Consumer sizing, retry policy, DNS and outbound SMTP for `python -m services.delivery`."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9102)

    # Every pod reads one ConfigMap, so a name says whose setting it is: POSTROOM_SMTP_COMMAND_TIMEOUT is the
    # ingress's idle wait, POSTROOM_RELAY_COMMAND_TIMEOUT the delivery's wait for a remote server's reply.
    renamed: ClassVar[dict[str, str]] = {
        "POSTROOM_PREFETCH": "delivery_prefetch",
        "POSTROOM_CONCURRENCY": "delivery_concurrency",
        "POSTROOM_ACK_INTERVAL": "delivery_ack_interval",
        "POSTROOM_ACK_HOLD": "delivery_ack_hold",
        "POSTROOM_LARGE_CONCURRENCY": "delivery_large_concurrency",
        "POSTROOM_ALIAS_DEPTH_LIMIT": "delivery_alias_depth_limit",
        "POSTROOM_MAX_RECEIVED_HEADERS": "delivery_max_received_headers",
        "POSTROOM_DNS_TIMEOUT": "delivery_dns_timeout",
        "POSTROOM_QUEUE_POLL_INTERVAL": "delivery_queue_poll_interval",
        "POSTROOM_REDIS_TIMEOUT": "delivery_redis_timeout",
        "POSTROOM_FAULT_CRASH_AFTER_STORE": "delivery_fault_crash_after_store",
        "POSTROOM_SMTP_CONNECT_TIMEOUT": "relay_connect_timeout",
        "POSTROOM_SMTP_GREETING_TIMEOUT": "relay_greeting_timeout",
        "POSTROOM_SMTP_COMMAND_TIMEOUT": "relay_command_timeout",
        "POSTROOM_SMTP_DATA_TIMEOUT": "relay_data_timeout",
        # Beside the listeners' POSTROOM_TLS_CERT/KEY it read as theirs; it is the delivery's outbound trust.
        "POSTROOM_TLS_CA_FILE": "delivery_tls_ca_file",
    }

    # At most `delivery_prefetch` unacked messages are held; `delivery_concurrency` of them are worked on at once.
    delivery_prefetch: int = Field(default=64, ge=1, le=10000)
    delivery_concurrency: int = Field(default=16, ge=1, le=1000)
    # Acks are batched: the deliveries finished within `delivery_ack_interval` (0: one event-loop iteration) go
    # out as one multiple ack up to the highest finished tag below the lowest unfinished one. A finished delivery
    # behind a slower one waits at most `delivery_ack_hold` (or until prefetch/4 wait) and is then acked alone.
    delivery_ack_interval: Delay = Field(default=0.01, le=1.0)
    delivery_ack_hold: Delay = 0.1
    # The broker pushes up to `delivery_prefetch` messages whatever their size, so large ones (over 1 MiB,
    # shared/spool.py) waiting for a worker are kept in memory only up to `delivery_memory_budget` bytes in all;
    # beyond it each is spilled to an unlinked file in `delivery_spool_dir` (unset: the system's temporary
    # directory) until it gets a worker. At most `delivery_large_concurrency` large messages are worked on at
    # once, so the bodies in memory stay under budget + delivery_large_concurrency * POSTROOM_MAX_MESSAGE_SIZE +
    # prefetch * 1 MiB of small ones. 128 MiB keeps five 25 MiB messages ready in memory; 4 lets big mail to slow
    # remote hosts overlap.
    delivery_memory_budget: int = Field(default=128 * 1024 * 1024, ge=0)
    delivery_large_concurrency: int = Field(default=4, ge=1, le=1000)
    delivery_spool_dir: OptionalPath = None

    retry_schedule: RetrySchedule = DEFAULT_RETRY_SCHEDULE
    max_queue_lifetime: Duration = 5 * 86400
    # Send a "still trying" notice (RFC 3464 Action: delayed) once a message has waited this long; unset: never.
    delay_warning_time: OptionalDuration = None
    delivery_alias_depth_limit: int = Field(default=10, ge=1, le=100)
    delivery_max_received_headers: int = Field(default=50, ge=1)

    # Shared by every service that resolves (the ingress's checks too): one meaning, the DNS servers to ask.
    dns_nameservers: Nameservers = ()
    delivery_dns_timeout: Duration = 10.0

    transport_map: Annotated[dict[str, Route], NoDecode] = Field(default_factory=dict)
    relay_host: Route | None = None
    relay_username: str | None = None
    # Validated even when unset, so that a username without a password stops the start instead of never sending AUTH.
    relay_password: SecretStr | None = Field(default=None, validate_default=True)
    # TLS from the first byte (RFC 8314) to the relay host; unset: exactly when its port is 465.
    relay_implicit_tls: bool | None = None
    # Extra trusted CAs (a PEM bundle) for the relay host's certificate, besides the system's.
    relay_tls_ca_file: OptionalPath = None
    # Outbound TLS policies of MX hosts: extra CAs (a PEM bundle), besides the system's, for the MTA-STS policy
    # hosts' HTTPS and the certificates of MX hosts under an MTA-STS policy. Not the relay host's CAs above: a
    # private CA trusted for one's own relay must not vouch for other domains' MX hosts.
    delivery_tls_ca_file: OptionalPath = None
    # Honour the domains' MTA-STS policies (RFC 8461) and DANE TLSA records (RFC 7672, needs a validating resolver).
    mta_sts: bool = True
    dane: bool = True
    # Send daily TLS-RPT reports (RFC 8460) of the sessions under those policies to the domains' rua addresses.
    tlsrpt_enable: bool = False

    # RFC 5321 §4.5.3.2 minimum timeouts: greeting 5 min, MAIL/RCPT 5 min, DATA termination 10 min.
    # The TCP connect itself is not covered by the RFC; 30 s as in Postfix's smtp_connect_timeout.
    relay_connect_timeout: Duration = 30.0
    relay_greeting_timeout: Duration = 300.0
    relay_command_timeout: Duration = 300.0
    relay_data_timeout: Duration = 600.0

    # The overall deadline of one delivery attempt's remote relays (the relay timeouts above are per step): well
    # under RabbitMQ's consumer_timeout (the deploy files set it to 1h), which would close the channel of a delivery
    # held unacked longer; past it the domains not finished are deferred (4.4.7), the others keep their outcome.
    delivery_attempt_timeout: Duration = 600.0
    # On SIGTERM, how long the messages in hand may take to finish; the rest go back to the queue unacked. Within
    # the deploy files' grace period (120 s), which also covers closing the connections.
    delivery_drain_timeout: Duration = 30.0

    delivery_queue_poll_interval: Duration = 10.0

    # DKIM-sign relayed mail from local domains with keys (services/delivery/dkim.py); false: send everything unsigned.
    dkim_signing: bool = True
    # As for the ingress: a message from these clients (or with AUTH, or composed here) is ours to sign.
    trusted_networks: Networks = parse_networks("127.0.0.0/8,::1/128")
    # A Redis that hangs (rather than refusing) must not hold messages for ever: the call fails, the recipient is
    # deferred, and the dedup key makes the retry safe if the store did happen.
    delivery_redis_timeout: Duration = 30.0

    # Fault injection for tests only: die with SIGKILL after storing, before the ack. Inert unless set.
    delivery_fault_crash_after_store: bool = False

    @field_validator("transport_map", mode="before")
    @classmethod
    def _transport_map(cls, value: Any) -> dict[str, Route]:
        return value if isinstance(value, dict) else parse_transport_map(str(value))

    @field_validator("relay_password")
    @classmethod
    def _relay_credentials(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("relay_username") is None):
            raise ValueError("POSTROOM_RELAY_USERNAME and POSTROOM_RELAY_PASSWORD are set together or not at all")
        return value

    @field_validator("relay_username", "relay_password", "relay_implicit_tls", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("relay_tls_ca_file", "delivery_tls_ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None:
            check_ca_file(value)
        return value

    @property
    def relay_authenticates(self) -> bool:
        """Credentials are configured: the relay host gets AUTH, and therefore only verified TLS."""
        return self.relay_username is not None and self.relay_password is not None

    @property
    def relay_uses_implicit_tls(self) -> bool:
        if self.relay_implicit_tls is not None:
            return self.relay_implicit_tls
        return self.relay_host is not None and self.relay_host.port == SMTPS_PORT

    @field_validator("relay_host", mode="before")
    @classmethod
    def _relay_host(cls, value: Any) -> Route | None:
        if value is None or isinstance(value, Route):
            return value
        return parse_route(str(value)) if str(value).strip() else None
