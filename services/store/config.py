"""Settings of the store service, the admin API and the `postroom` CLI (`POSTROOM_*` variables)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from services.store.addresses import AddressError, validate_address, validate_domain
from services.store.idn import ascii_domain
from services.store.passwords import Argon2Settings
from shared.client_ports import (
    Endpoint,
    Pop3ListenSettings,
    SubmissionListenSettings,
    client_endpoints,
    parse_client_ports,
)
from shared.netaddr import HostPort
from shared.settings import (
    DEFAULT_RETRY_SCHEDULE,
    CommonSettings,
    Duration,
    ListenAddress,
    OptionalPath,
    OptionalUrl,
    RetrySchedule,
)


def parse_acme_domains(value: Any) -> tuple[str, ...]:
    """`mail.example.com,example.com`: the names of one certificate, as ACME identifiers (A-labels), in order."""
    if isinstance(value, tuple):
        return value
    names: list[str] = []
    for item in str(value or "").split(","):
        if not item.strip():
            continue
        try:
            name = ascii_domain(validate_domain(item))
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        if name is None:
            raise ValueError(f"bad domain {item.strip()!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class AcmeConfig:
    """Built-in ACME as the store runs it (services/store/acme.py)."""

    directory: str
    domains: tuple[str, ...]
    email: str | None
    ca_file: str | None
    renew_before: float
    check_interval: float
    retry_delay: float


class StoreSettings(CommonSettings, Argon2Settings, SubmissionListenSettings, Pop3ListenSettings):
    """The store's own settings on top of the common ones (argon2id: the admin API and CLI set passwords; the
    submission and POP3 listeners: autoconfig and `postroom domain dns` advertise their ports)."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9104)
    admin_listen: ListenAddress = HostPort("0.0.0.0", 8080)
    # No token means the API refuses every request: an admin API must never be open by default.
    admin_token: SecretStr | None = None
    trace_retention: Duration = 7 * 86400
    # The delay queues `postroom queue` reports on: the delivery's schedule (the same variable, the same parser).
    retry_schedule: RetrySchedule = DEFAULT_RETRY_SCHEDULE
    # How often the store's gauges (domains, mailboxes, messages, bytes) are recomputed from Redis.
    stats_interval: Duration = 15.0
    # Public HTTP for mail clients' autoconfig (Mozilla) and autodiscover (Microsoft); unset or empty: off.
    autoconfig_listen: ListenAddress = None
    # The ports clients reach where a NAT or load balancer maps them (the container image listens on 2587 and
    # so on): `submission=587,submissions=465,pop3=110,pop3s=995`; unset: the listen ports themselves.
    client_ports: str = ""
    # On SIGTERM, how long admin API requests in progress may take to finish.
    store_drain_timeout: Duration = 10.0
    # Built-in ACME (RFC 8555, HTTP-01 answered on the autoconfig listener): the CA's directory URL; unset: off.
    acme_directory: OptionalUrl = None
    # The names of the one certificate every TLS listener serves, comma separated (the first is its subject).
    acme_domains: Annotated[tuple[str, ...], BeforeValidator(parse_acme_domains), NoDecode] = ()
    # The account's contact (the CA's expiry notices go there); unset: an account without contact.
    acme_email: str | None = None
    # Extra CAs to trust for the ACME server's own HTTPS (a private CA, a test CA); unset: the system's.
    acme_ca_file: OptionalPath = None
    # Order a new certificate when the served one ends within this window (Let's Encrypt certificates last 90 days).
    acme_renew_before: Duration = 30 * 86400
    # How often the certificate's validity is looked at in Redis (and the longest wait between failed orders).
    acme_check_interval: Duration = 3600.0
    # The wait after a failed order, doubled at each failure in a row up to POSTROOM_ACME_CHECK_INTERVAL.
    acme_retry_delay: Duration = 60.0

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("acme_email", mode="before")
    @classmethod
    def _acme_email(cls, value: Any) -> Any:
        if value is None or not str(value).strip():
            return None
        try:
            return validate_address(str(value))
        except AddressError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _acme(self) -> Self:
        if self.acme_directory is None:
            return self
        if not self.acme_domains:
            raise ValueError("POSTROOM_ACME_DOMAINS: the names of the certificate are needed when ACME is on")
        if self.autoconfig_listen is None:
            raise ValueError(
                "POSTROOM_AUTOCONFIG_LISTEN: ACME answers HTTP-01 on it (reachable on port 80 of every name)"
            )
        return self

    @property
    def acme(self) -> AcmeConfig | None:
        """Built-in ACME's settings, or None when it is off."""
        if self.acme_directory is None:
            return None
        return AcmeConfig(
            self.acme_directory,
            self.acme_domains,
            self.acme_email,
            self.acme_ca_file,
            self.acme_renew_before,
            self.acme_check_interval,
            self.acme_retry_delay,
        )

    @field_validator("client_ports")
    @classmethod
    def _client_ports(cls, value: str) -> str:
        parse_client_ports(value)
        return value

    @property
    def client_endpoints(self) -> list[Endpoint]:
        return client_endpoints(self, parse_client_ports(self.client_ports))

    @property
    def trace_retention_seconds(self) -> int:
        """Whole seconds, as Redis's EXPIRE takes them."""
        return max(1, round(self.trace_retention))
