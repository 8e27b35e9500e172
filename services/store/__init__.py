"""The store: the only code that knows Redis key names (mailboxes, accounts, domains, aliases, quotas)."""

from __future__ import annotations

import os
from typing import Any

from services.store.accounts import AccountError, Accounts, AddressFacts, User
from services.store.addresses import AddressError
from services.store.certificates import AcmeData, StoreCertificateSource
from services.store.coalesce import Coalescer
from services.store.dkim import DkimKey, DkimKeys
from services.store.keys import Keys
from services.store.mailbox import Mailboxes, MessageInfo, StoreOutcome
from services.store.progress import Progress
from services.store.queue_index import QueueIndex
from services.store.ratelimit import Rate, RateLimiter, Verdict, parse_rate
from services.store.throttle import LoginThrottle
from services.store.tls_policy import TlsPolicies
from services.store.trace import DEFAULT_RETENTION, Trace
from shared.connections import connect_redis, untimed
from shared.errors import ConfigError
from shared.settings import parse_duration

__all__ = [
    "AccountError",
    "Accounts",
    "AcmeData",
    "AddressError",
    "AddressFacts",
    "DkimKey",
    "DkimKeys",
    "LoginThrottle",
    "Mailboxes",
    "MessageInfo",
    "Progress",
    "QueueIndex",
    "Rate",
    "RateLimiter",
    "Store",
    "StoreCertificateSource",
    "StoreOutcome",
    "TlsPolicies",
    "Trace",
    "User",
    "Verdict",
    "parse_rate",
]


def retention_from_environment() -> int:
    """`POSTROOM_TRACE_RETENTION` for every service that records traces, so one setting governs them all."""
    text = os.environ.get("POSTROOM_TRACE_RETENTION", "").strip()
    if not text:
        return DEFAULT_RETENTION
    try:
        return max(1, round(parse_duration(text)))
    except ValueError as exc:
        raise ConfigError(f"POSTROOM_TRACE_RETENTION: {exc}") from None


class Store:
    """One handle on everything kept in Redis for a namespace."""

    def __init__(self, redis: Any, namespace: str, trace_retention: int | None = None, coalesce: bool = False) -> None:
        self.redis = redis
        self.namespace = namespace
        self.keys = Keys(namespace)
        # Coalesced lookups, stores and trace writes share round trips among concurrent callers (the delivery).
        self._untimed, timeout = untimed(redis) if coalesce else (redis, None)
        coalescer = Coalescer(self._untimed, timeout) if coalesce else None
        self.accounts = Accounts(redis, self.keys, coalescer)
        self.dkim = DkimKeys(redis, self.keys)
        self.acme = AcmeData(redis, self.keys)
        self.mailboxes = Mailboxes(redis, self.keys, coalescer=coalescer)
        # A finished message's progress lasts as long as its mailbox dedup keys.
        self.rate_limits = RateLimiter(redis, self.keys, coalescer)
        self.progress = Progress(redis, self.keys, self.mailboxes.dedup_ttl)
        self.tls_policies = TlsPolicies(redis, self.keys)
        self.queue = QueueIndex(redis, self.keys, self.mailboxes.dedup_ttl)
        self.trace = Trace(redis, namespace, trace_retention or retention_from_environment(), coalescer=coalescer)

    @classmethod
    def connect(
        cls,
        url: str,
        namespace: str,
        cluster: bool = False,
        trace_retention: int | None = None,
        coalesce: bool = False,
        **redis_options: Any,
    ) -> Store:
        """A store on a new client; `redis_options` go to redis-py (e.g. socket timeouts for the CLI)."""
        return cls(connect_redis(url, cluster, **redis_options), namespace, trace_retention, coalesce)

    def certificate_source(self) -> StoreCertificateSource:
        """The listeners' certificate when built-in ACME is on (shared/certs.py reloads it on renewal)."""
        return StoreCertificateSource(self.acme)

    def login_throttle(self, base: float, cap: float) -> LoginThrottle:
        """The login throttle (shared by every replica of SMTP AUTH and POP3) with a service's delays."""
        return LoginThrottle(self.redis, self.keys, base, cap)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        """Write the trace events still pending (`Trace.post`), then close the client."""
        await self.trace.close()
        await self.redis.aclose()
        if self._untimed is not self.redis:
            await self._untimed.aclose(close_connection_pool=True)
