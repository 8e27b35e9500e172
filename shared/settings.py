"""Settings base: every service reads its `POSTROOM_*` variables through a subclass of `CommonSettings`."""

from __future__ import annotations

import math
import os
import socket
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError
from shared.netaddr import HostPort, Network, parse_host_port, parse_networks

# Postfix's and chasquid's schedule: 1m, 5m, 15m, 30m, 1h, 2h, 4h (the last step repeats).
DEFAULT_RETRY_SCHEDULE = (60, 300, 900, 1800, 3600, 7200, 14400)

ENV_PREFIX = "POSTROOM_"

SettingsT = TypeVar("SettingsT", bound="CommonSettings")


def listen_address(value: Any) -> HostPort | None:
    """Validator body for listen settings: `host:port`, `:port`, or empty to disable the listener."""
    if value is None or isinstance(value, HostPort):
        return value
    text = str(value).strip()
    if not text:
        return None
    return parse_host_port(text)


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `5m`, `2h` or `5d`."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 5m, 2h, 5d)") from None
    # float() also reads "nan", "inf" and "1e400": no timer, TTL or queue name can be made of those.
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} must be a finite number")
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


def duration_value(value: Any) -> float:
    """Validator body for durations: a positive number of seconds, or text such as `30s`, `5m`, `2h`, `5d`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be positive")
        return float(value)
    return parse_duration(str(value))


def delay_value(value: Any) -> float:
    """Like `duration_value`, but zero is allowed (it turns a delay off)."""
    if str(value).strip() in ("0", "0s", "0.0"):
        return 0.0
    return duration_value(value)


def optional_duration_value(value: Any) -> float | None:
    """Like `duration_value`, but unset or empty is None (the feature is off)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return duration_value(value)


def parse_retry_schedule(text: str) -> tuple[int, ...]:
    """`1m,5m,15m` → (60, 300, 900): whole seconds, because each step is a delay queue named by its TTL."""
    steps = []
    for item in text.split(","):
        if not item.strip():
            continue
        seconds = parse_duration(item)
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"retry step {item.strip()!r} must be a whole number of seconds, at least 1s")
        steps.append(int(seconds))
    if not steps:
        raise ValueError("the retry schedule needs at least one step (e.g. 1m,5m,1h)")
    return tuple(steps)


def retry_schedule_value(value: Any) -> tuple[int, ...]:
    """Validator body for `POSTROOM_RETRY_SCHEDULE`: text as `parse_retry_schedule` reads it, or whole seconds."""
    if isinstance(value, tuple | list):
        return parse_retry_schedule(",".join(f"{step}s" for step in value))
    return parse_retry_schedule(str(value))


def host_ports_value(value: Any, default_port: int) -> tuple[HostPort, ...]:
    """Validator body for lists of `host[:port]` (comma separated); a host without a port gets `default_port`."""
    if isinstance(value, tuple | list):
        return tuple(item if isinstance(item, HostPort) else parse_host_port(str(item), default_port) for item in value)
    return tuple(parse_host_port(item, default_port=default_port) for item in str(value).split(",") if item.strip())


def nameservers(value: Any) -> tuple[HostPort, ...]:
    """`host[:port]` list (port 53 when left out), comma separated; empty: the system's resolver."""
    return host_ports_value(value, default_port=53)


def optional_url(value: Any) -> str | None:
    """An http:// or https:// URL without its trailing slash; unset or empty is None."""
    text = str(value or "").strip().rstrip("/")
    if not text:
        return None
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text


def optional_path(value: Any) -> str | None:
    """An unset or empty path is None."""
    return (str(value).strip() or None) if value is not None else None


# Field types every service's settings use, so each rule is written once.
Duration = Annotated[float, BeforeValidator(duration_value), NoDecode]
Delay = Annotated[float, BeforeValidator(delay_value), NoDecode]
OptionalDuration = Annotated[float | None, BeforeValidator(optional_duration_value), NoDecode]
RetrySchedule = Annotated[tuple[int, ...], BeforeValidator(retry_schedule_value), NoDecode]
ListenAddress = Annotated[HostPort | None, BeforeValidator(listen_address), NoDecode]
OptionalPath = Annotated[str | None, BeforeValidator(optional_path)]
OptionalUrl = Annotated[str | None, BeforeValidator(optional_url)]
# CIDRs, comma or space separated (`10.0.0.0/8, ::1/128`); empty: none.
Networks = Annotated[tuple[Network, ...], BeforeValidator(parse_networks), NoDecode]
# POSTROOM_DNS_NAMESERVERS: every DNS lookup of a service (MX in the delivery, SPF/DKIM/DMARC in the ingress).
Nameservers = Annotated[tuple[HostPort, ...], BeforeValidator(nameservers), NoDecode]


class CommonSettings(BaseSettings):
    """What every service needs: where the broker and Redis are, its name, its metrics port, logging."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    # Prefix of every Redis key and AMQP name, so several installations (or tests) share one broker and Redis.
    namespace: str = Field(default="postroom", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    hostname: str = Field(default_factory=socket.getfqdn)
    metrics_listen: ListenAddress = None
    log_level: str = "info"
    log_format: str = Field(default="console", pattern=r"^(console|json)$")

    # Variables renamed, still read for one release: old name → field. Each one set is warned about at start.
    renamed: ClassVar[dict[str, str]] = {}
    # (old, new) variable names this instance was given in the old spelling (see `load_settings`).
    _old_names_used: tuple[tuple[str, str], ...] = PrivateAttr(default=())

    @property
    def old_names_used(self) -> tuple[tuple[str, str], ...]:
        """(old variable, new variable) for each renamed setting read under its old name: for the start-up log."""
        return self._old_names_used

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        value = value.strip().rstrip(".")
        if not value or any(c.isspace() or c in '<>[]\\"' for c in value):
            raise ValueError("must be a host name")
        return value


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def _old_names(cls: type[CommonSettings], overrides: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Fill `overrides` from renamed variables whose new name is not set.

    Returns (field → old name) for every old name set, and for those whose value was taken (the new name wins).
    """
    used: dict[str, str] = {}
    taken: dict[str, str] = {}
    for old, field in cls.renamed.items():
        if old not in os.environ:
            continue
        used[field] = old
        if field not in overrides and variable(field) not in os.environ:
            overrides[field] = os.environ[old]
            taken[field] = old
    return used, taken


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment; a bad value raises ConfigError naming the variable."""
    overrides = dict(overrides)
    used, taken = _old_names(cls, overrides)
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if not error["loc"]:
                problems.append(message)  # a rule across settings (a model validator): its text names them
                continue
            field = ".".join(str(part) for part in error["loc"])
            problems.append(f"{taken.get(field) or variable(field)}: {message}")
        raise ConfigError("; ".join(problems)) from None
    settings._old_names_used = tuple((old, variable(field)) for field, old in used.items())
    return settings
