"""Domains, user accounts and aliases."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from services.store.addresses import AddressError, split_address, validate_address, validate_domain
from services.store.keys import Keys, normalize_address
from services.store.passwords import hash_password, verify_password


class AccountError(ValueError):
    """A user error in an account operation (unknown domain, existing user, ...); the text is safe to show."""


@dataclass(frozen=True)
class User:
    address: str
    quota: int
    created: float
    messages: int
    bytes: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Accounts:
    """Domains, users and aliases of one namespace."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # -- domains ---------------------------------------------------------------------------------------------
    async def add_domain(self, domain: str) -> bool:
        domain = validate_domain(domain)
        return bool(await self.redis.sadd(self.keys.domains, domain))

    async def remove_domain(self, domain: str) -> bool:
        domain = domain.strip().lower()
        users = [u for u in await self.list_users() if split_address(u)[1] == domain]
        if users:
            raise AccountError(f"domain {domain} still has {len(users)} user(s); remove them first")
        return bool(await self.redis.srem(self.keys.domains, domain))

    async def list_domains(self) -> list[str]:
        return sorted(_text(d) for d in await self.redis.smembers(self.keys.domains))

    async def is_local_domain(self, domain: str) -> bool:
        return bool(await self.redis.sismember(self.keys.domains, domain.strip().lower()))

    # -- users -----------------------------------------------------------------------------------------------
    async def add_user(self, address: str, password: str, quota: int = 0) -> User:
        address = normalize_address(validate_address(address))
        _, domain = split_address(address)
        if not await self.is_local_domain(domain):
            raise AccountError(f"{domain} is not a local domain; add it first")
        if not password:
            raise AccountError("the password must not be empty")
        if quota < 0:
            raise AccountError("the quota must be zero (none) or a positive number of bytes")
        box = self.keys.mailbox(address)
        created = time.time()
        fields = {"password": hash_password(password), "quota": str(quota), "created": repr(created)}
        if not await self.redis.hsetnx(box.account, "created", fields["created"]):
            raise AccountError(f"user {address} already exists")
        await self.redis.hset(box.account, mapping=fields)
        await self.redis.sadd(self.keys.users, address)
        return User(address, quota, created, 0, 0)

    async def get_user(self, address: str) -> User | None:
        box = self.keys.mailbox(address)
        account = await self.redis.hgetall(box.account)
        if not account:
            return None
        usage = await self.redis.hgetall(box.usage)
        fields = {_text(k): _text(v) for k, v in account.items()}
        counts = {_text(k): int(v) for k, v in usage.items()}
        return User(
            normalize_address(address),
            int(fields.get("quota", "0")),
            float(fields.get("created", "0")),
            counts.get("messages", 0),
            counts.get("bytes", 0),
        )

    async def user_exists(self, address: str) -> bool:
        return bool(await self.redis.exists(self.keys.mailbox(address).account))

    async def list_users(self) -> list[str]:
        return sorted(_text(u) for u in await self.redis.smembers(self.keys.users))

    async def set_password(self, address: str, password: str) -> None:
        if not password:
            raise AccountError("the password must not be empty")
        if not await self.user_exists(address):
            raise AccountError(f"no such user {normalize_address(address)}")
        await self.redis.hset(self.keys.mailbox(address).account, "password", hash_password(password))

    async def set_quota(self, address: str, quota: int) -> None:
        if quota < 0:
            raise AccountError("the quota must be zero (none) or a positive number of bytes")
        if not await self.user_exists(address):
            raise AccountError(f"no such user {normalize_address(address)}")
        await self.redis.hset(self.keys.mailbox(address).account, "quota", str(quota))

    async def authenticate(self, address: str, password: str) -> bool:
        """True when the password is right; equal work for unknown users; rehashes when parameters changed."""
        try:
            box = self.keys.mailbox(validate_address(address))
        except AddressError:
            await verify_password(None, password)
            return False
        stored = await self.redis.hget(box.account, "password")
        valid, needs_rehash = await verify_password(_text(stored) if stored else None, password)
        if valid and needs_rehash:
            await self.redis.hset(box.account, "password", hash_password(password))
        return valid

    # -- aliases ---------------------------------------------------------------------------------------------
    async def add_alias(self, source: str, targets: list[str]) -> None:
        source = source.strip().lower()
        if source.startswith("@"):
            domain = validate_domain(source[1:])
        else:
            source = normalize_address(validate_address(source))
            domain = split_address(source)[1]
        if not await self.is_local_domain(domain):
            raise AccountError(f"{domain} is not a local domain")
        if not targets:
            raise AccountError("an alias needs at least one target")
        clean = [normalize_address(validate_address(t)) for t in targets]
        await self.redis.hset(self.keys.aliases, source, json.dumps(clean))

    async def remove_alias(self, source: str) -> bool:
        return bool(await self.redis.hdel(self.keys.aliases, source.strip().lower()))

    async def list_aliases(self) -> dict[str, list[str]]:
        raw = await self.redis.hgetall(self.keys.aliases)
        return {_text(k): json.loads(_text(v)) for k, v in sorted(raw.items())}

    async def alias_targets(self, source: str) -> list[str] | None:
        raw = await self.redis.hget(self.keys.aliases, source.strip().lower())
        return None if raw is None else list(json.loads(_text(raw)))

    async def recipient_exists(self, address: str) -> bool:
        """Would local delivery accept this address: a user, an alias, or a catch-all of its domain."""
        address = normalize_address(address)
        if await self.user_exists(address) or await self.alias_targets(address) is not None:
            return True
        return await self.alias_targets("@" + split_address(address)[1]) is not None
