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
from shared.settings import CommonSettings, ListenAddress, parse_duration

DEFAULT_RETRY_SCHEDULE = "1m,5m,15m,30m,1h,2h,4h"


def parse_schedule(text: str) -> list[int]:
    """Whole seconds of each retry step of `POSTROOM_RETRY_SCHEDULE` (`1m,5m,1h`), as delivery names its queues."""
    steps = [part for part in (p.strip() for p in text.split(",")) if part]
    if not steps:
        raise ValueError("needs at least one duration (e.g. 1m,5m,1h)")
    return [max(1, round(parse_duration(step))) for step in steps]


class StoreSettings(CommonSettings, Argon2Settings, SubmissionListenSettings, Pop3ListenSettings):
    """The store's own settings on top of the common ones (argon2id: the admin API and CLI set passwords; the
    submission and POP3 listeners: autoconfig and `postroom domain dns` advertise their ports)."""

    metrics_listen: ListenAddress = HostPort("0.0.0.0", 9104)
    admin_listen: ListenAddress = HostPort("0.0.0.0", 8080)
    # No token means the API refuses every request: an admin API must never be open by default.
    admin_token: SecretStr | None = None
    # Kept as text and parsed by properties: pydantic-settings would otherwise try to read lists as JSON.
    trace_retention: str = "7d"
    retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    # How often the store's gauges (domains, mailboxes, messages, bytes) are recomputed from Redis.
    stats_interval: str = "15s"
    # Public HTTP for mail clients' autoconfig (Mozilla) and autodiscover (Microsoft); unset or empty: off.
    autoconfig_listen: ListenAddress = None
    # The ports clients reach where a NAT or load balancer maps them (the container image listens on 2587 and
    # so on): `submission=587,submissions=465,pop3=110,pop3s=995`; unset: the listen ports themselves.
    client_ports: str = ""

    @field_validator("admin_token", mode="before")
    @classmethod
    def _admin_token(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("trace_retention", "stats_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("client_ports")
    @classmethod
    def _client_ports(cls, value: str) -> str:
        parse_client_ports(value)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def client_endpoints(self) -> list[Endpoint]:
        return client_endpoints(self, parse_client_ports(self.client_ports))

    @property
    def retry_delays(self) -> list[int]:
        return parse_schedule(self.retry_schedule)

    @property
    def trace_retention_seconds(self) -> int:
        return max(1, round(parse_duration(self.trace_retention)))

    @property
    def stats_interval_seconds(self) -> float:
        return parse_duration(self.stats_interval)
