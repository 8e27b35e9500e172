"""Where mail clients connect: the submission and POP3 listen settings and the ports a NAT maps them to.

The services that listen on them read them, and so does the store, which advertises them (autoconfig, `postroom
domain dns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.netaddr import HostPort
from shared.settings import ENV_PREFIX, ListenAddress


class SubmissionListenSettings(BaseSettings):
    """`POSTROOM_SUBMISSION_LISTEN` (STARTTLS, RFC 6409) and `POSTROOM_SMTPS_LISTEN` (implicit TLS, RFC 8314)."""

    # The same as CommonSettings': pydantic merges the configs of all bases, so a default one here would win.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    submission_listen: ListenAddress = HostPort("0.0.0.0", 587)
    smtps_listen: ListenAddress = HostPort("0.0.0.0", 465)


class Pop3ListenSettings(BaseSettings):
    """`POSTROOM_POP3_LISTEN` (STLS, RFC 2595) and `POSTROOM_POP3S_LISTEN` (implicit TLS, RFC 8314)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    pop3_listen: ListenAddress = HostPort("0.0.0.0", 110)
    pop3s_listen: ListenAddress = HostPort("0.0.0.0", 995)


# The service names of RFC 6186 and RFC 8314, in the order clients should prefer them (implicit TLS first).
SERVICES = ("submissions", "submission", "pop3s", "pop3")


@dataclass(frozen=True)
class Endpoint:
    """One way a client reaches us: `service` as RFC 6186 names it, the port, and how TLS starts there."""

    service: str
    port: int | None  # None: the listener is off

    @property
    def implicit_tls(self) -> bool:
        return self.service in ("submissions", "pop3s")

    @property
    def protocol(self) -> str:
        return "smtp" if self.service.startswith("submission") else "pop3"


def parse_client_ports(text: str) -> dict[str, int]:
    """`POSTROOM_CLIENT_PORTS`: `submission=587,submissions=465,pop3=110,pop3s=995` (any of them)."""
    ports: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in SERVICES or not value.strip().isdigit() or not 0 < int(value) < 65536:
            raise ValueError(f"bad entry {part!r} (use e.g. submission=587,submissions=465,pop3=110,pop3s=995)")
        ports[name] = int(value)
    return ports


def client_endpoints(settings: Any, public: dict[str, int]) -> list[Endpoint]:
    """The four endpoints in preference order: each one's port is the one its service listens on (the same
    setting), or the public port a NAT or load balancer maps to it; None when its listener is off."""
    listens: dict[str, HostPort | None] = {
        "submissions": settings.smtps_listen,
        "submission": settings.submission_listen,
        "pop3s": settings.pop3s_listen,
        "pop3": settings.pop3_listen,
    }
    return [
        Endpoint(name, None if listens[name] is None else public.get(name, listens[name].port))  # type: ignore[union-attr]
        for name in SERVICES
    ]
