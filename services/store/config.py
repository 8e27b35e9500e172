"""Settings of the store service, the admin API and the `postroom` CLI (`POSTROOM_*` variables)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr, field_validator

from services.store.passwords import Argon2Settings
from shared.client_ports import (
    Endpoint,
    Pop3ListenSettings,
    SubmissionListenSettings,
    client_endpoints,
    parse_client_ports,
)
from shared.netaddr import HostPort
from shared.settings import DEFAULT_RETRY_SCHEDULE, CommonSettings, Duration, ListenAddress, RetrySchedule


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

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

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
