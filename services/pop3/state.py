"""RFC 1939 session states and the per-connection state every command handler reads and changes."""

from __future__ import annotations

import enum
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Any

from services.pop3.config import Pop3Settings
from services.pop3.maildrop import Maildrop
from services.store import LoginThrottle, Store


class State(enum.Enum):
    """RFC 1939 §3: AUTHORIZATION → TRANSACTION → UPDATE (entered only by QUIT from TRANSACTION)."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


@dataclass
class ServerContext:
    """What every session of one server shares."""

    settings: Pop3Settings
    store: Store
    tls_context: ssl.SSLContext | None
    throttle: LoginThrottle


def is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass
class SessionState:
    """One client's session: where it is in the protocol and what it has opened."""

    ctx: ServerContext
    peer_ip: str
    tls: bool
    log: Any
    # The client is on loopback, as far as we may believe: a direct peer's address, or a PROXY header's only when
    # POSTROOM_PROXY_TRUST_CLIENT_NETWORKS says so (the balancer-to-us hop crosses a network either way).
    local: bool = False
    state: State = State.AUTHORIZATION
    user: str | None = None
    utf8: bool = False
    auth_failures: int = 0
    maildrop: Maildrop | None = field(default=None, repr=False)

    @property
    def plaintext_auth_allowed(self) -> bool:
        """RFC 2595 §2.1: cleartext passwords only over TLS, from loopback, or where configured."""
        return self.tls or self.ctx.settings.pop3_allow_plaintext_auth or self.local

    @property
    def can_start_tls(self) -> bool:
        return not self.tls and self.ctx.tls_context is not None and self.state is State.AUTHORIZATION
