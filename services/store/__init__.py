"""The store: the only code that knows Redis key names (mailboxes, accounts, domains, aliases, quotas)."""

from __future__ import annotations

from typing import Any

from services.store.accounts import AccountError, Accounts, User
from services.store.addresses import AddressError
from services.store.keys import Keys
from services.store.mailbox import Mailboxes, MessageInfo, StoreOutcome
from services.store.trace import Trace
from shared.connections import connect_redis

__all__ = [
    "AccountError",
    "Accounts",
    "AddressError",
    "Mailboxes",
    "MessageInfo",
    "Store",
    "StoreOutcome",
    "Trace",
    "User",
]


class Store:
    """One handle on everything kept in Redis for a namespace."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.keys = Keys(namespace)
        self.accounts = Accounts(redis, self.keys)
        self.mailboxes = Mailboxes(redis, self.keys)
        self.trace = Trace(redis, namespace)

    @classmethod
    def connect(cls, url: str, namespace: str, cluster: bool = False) -> Store:
        return cls(connect_redis(url, cluster), namespace)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()
