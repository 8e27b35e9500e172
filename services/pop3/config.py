"""Settings of the POP3 service (`POSTROOM_POP3_*` and the shared ones)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from shared.netaddr import HostPort
from shared.settings import CommonSettings, listen_address, parse_duration


def _duration(value: Any) -> float:
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("must be positive")
        return float(value)
    return parse_duration(str(value))


class Pop3Settings(CommonSettings):
    """Listeners, TLS, authentication policy and session limits of the POP3 service."""

    metrics_listen: HostPort | None = HostPort("0.0.0.0", 9103)
    pop3_listen: HostPort | None = HostPort("0.0.0.0", 110)
    pop3s_listen: HostPort | None = HostPort("0.0.0.0", 995)
    tls_cert: str | None = None
    tls_key: str | None = None
    # RFC 2595 §2.1 / RFC 8314: no cleartext passwords on the open network; loopback clients are always allowed.
    pop3_allow_plaintext_auth: bool = False
    # RFC 1939 §3 asks for at least 10 minutes; lower values are accepted for tests.
    pop3_autologout: float = 600.0
    pop3_lock_ttl: float = 120.0
    pop3_tls_handshake_timeout: float = 30.0
    pop3_line_limit: int = Field(default=4096, ge=512, le=1 << 20)
    pop3_max_bad_commands: int = Field(default=10, ge=1)
    pop3_max_auth_failures: int = Field(default=3, ge=1)
    pop3_auth_failure_delay: float = 1.0
    pop3_auth_failure_delay_max: float = 15.0
    pop3_chunk_size: int = Field(default=65536, ge=1024, le=16 << 20)
    pop3_shutdown_grace: float = 10.0
    pop3_redis_connections: int = Field(default=200, ge=1, le=10000)
    pop3_max_connections: int = Field(default=5000, ge=1)
    pop3_max_connections_per_ip: int = Field(default=50, ge=1)

    @field_validator("pop3_listen", "pop3s_listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> HostPort | None:
        return listen_address(value)

    @field_validator("metrics_listen", mode="before")
    @classmethod
    def _metrics_listen(cls, value: Any) -> HostPort | None:
        return listen_address(value)

    @field_validator(
        "pop3_autologout",
        "pop3_lock_ttl",
        "pop3_tls_handshake_timeout",
        "pop3_auth_failure_delay_max",
        "pop3_shutdown_grace",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> float:
        return _duration(value)

    @field_validator("pop3_auth_failure_delay", mode="before")
    @classmethod
    def _failure_delay(cls, value: Any) -> float:
        # Zero turns the delay off (tests); otherwise a duration.
        if str(value).strip() in ("0", "0s", "0.0"):
            return 0.0
        return _duration(value)

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> str | None:
        return str(value).strip() or None if value is not None else None
