"""Domains, user accounts and aliases."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from services.store import lua
from services.store.addresses import (
    AddressError,
    account_address,
    split_address,
    validate_address,
    validate_domain,
)
from services.store.coalesce import Coalescer, round_trip
from services.store.idn import normalize_domain
from services.store.keys import Keys, normalize_address
from services.store.part import Part, as_text
from services.store.passwords import hash_password, hash_password_off_loop, remember, verify_password
from services.store.ratelimit import Rate

# Bounds the fan-out of one alias (and the size of its hash field).
MAX_ALIAS_TARGETS = 1000


class AccountError(ValueError):
    """A user error in an account operation (unknown domain, existing user, ...); the text is safe to show."""


class NotFoundError(AccountError):
    """The user, domain or alias named does not exist."""


class ConflictError(AccountError):
    """The change clashes with what exists (a user already there, a domain still in use)."""


@dataclass(frozen=True)
class AddressFacts:
    """What the store knows about one address, read in one round trip (`Accounts.lookup`)."""

    local_domain: bool
    user: bool
    aliases: list[str] | None  # the address's own alias targets
    catch_all: list[str] | None  # the targets of its domain's catch-all ("@domain")

    @property
    def deliverable(self) -> bool:
        """Local delivery would accept it: a user, an alias, or a catch-all of its domain."""
        return self.user or self.aliases is not None or self.catch_all is not None


@dataclass(frozen=True)
class User:
    address: str
    quota: int
    created: float
    messages: int
    bytes: int
    send_limit: str | None = None  # the account's own send limit (`100/1h`); None: POSTROOM_SEND_LIMIT


class Accounts(Part):
    """Domains, users and aliases of one namespace."""

    def __init__(self, redis: Any, keys: Keys, coalescer: Coalescer | None = None) -> None:
        super().__init__(redis, keys)
        self.coalescer = coalescer
        self._create = redis.register_script(lua.CREATE_ACCOUNT)
        self._update = redis.register_script(lua.UPDATE_ACCOUNT)
        self._close = redis.register_script(lua.CLOSE_MAILBOX)

    async def _update_field(self, address: str, field: str, value: str, expected: str = "") -> int:
        return int(await self._update(keys=[self.keys.mailbox(address).account], args=[field, value, expected]))

    # -- domains ---------------------------------------------------------------------------------------------
    async def add_domain(self, domain: str) -> bool:
        domain = validate_domain(domain)
        return bool(await self.redis.sadd(self.keys.domains, domain))

    async def remove_domain(self, domain: str) -> bool:
        domain = normalize_domain(domain.strip())
        users = [u for u in await self.list_users() if split_address(u)[1] == domain]
        if users:
            raise ConflictError(f"domain {domain} still has {len(users)} user(s); remove them first")
        removed = bool(await self.redis.srem(self.keys.domains, domain))
        # Its DKIM keys sign nothing once it is not local; a domain added again starts with new ones.
        await self.redis.delete(self.keys.dkim(domain))
        # Its aliases (catch-all included) would never be used again: remove them with it.
        stale = [
            a for a in await self.list_aliases() if (a[1:] if a.startswith("@") else a.rpartition("@")[2]) == domain
        ]
        if stale:
            await self.redis.hdel(self.keys.aliases, *stale)
        return removed

    async def list_domains(self) -> list[str]:
        return sorted(as_text(d) for d in await self.redis.smembers(self.keys.domains))

    async def is_local_domain(self, domain: str) -> bool:
        return bool(await self.redis.sismember(self.keys.domains, normalize_domain(domain.strip())))

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
        fields = ["password", hash_password(password), "quota", str(quota), "created", repr(created)]
        if not await self._create(keys=[box.account], args=fields):
            raise ConflictError(f"user {address} already exists")
        await self.redis.sadd(self.keys.users, address)
        return User(address, quota, created, 0, 0)

    async def remove_user(self, address: str) -> bool:
        """Remove an account and its whole mailbox; safe against concurrent deliveries and open POP3 sessions.

        First the account and the maildrop lock go in one script: from then on no delivery stores (the store script
        needs the account), no session can delete or refresh its lock, and none can take a new one. Then the now
        unchanging mailbox keys are deleted, and last the address leaves the users set. Repeating it after a crash
        finishes the job. True when there was anything to remove.
        """
        address = normalize_address(address)
        box = self.keys.mailbox(address)
        existed = bool(await self._close(keys=[box.account, box.lock]))
        uids = [as_text(u) for u in await self.redis.zrange(box.index, 0, -1)]
        fixed = [
            box.index,
            box.sizes,
            box.wire,
            box.usage,
            box.seq,
            box.lock,
            box.send_messages,
            box.send_recipients,
            box.imported,
        ]
        mailbox_keys = [*fixed, *(box.message(u) for u in uids)]
        for start in range(0, len(mailbox_keys), 500):
            # One slot (the mailbox hash tag), so a multi-key DEL is fine on a Redis Cluster too.
            await self.redis.delete(*mailbox_keys[start : start + 500])
        listed = bool(await self.redis.srem(self.keys.users, address))
        if await self.user_exists(address):
            # Re-added by someone else meanwhile: keep it listed rather than leave an invisible account.
            await self.redis.sadd(self.keys.users, address)
        return existed or listed

    async def get_user(self, address: str) -> User | None:
        box = self.keys.mailbox(address)
        account = await self.redis.hgetall(box.account)
        if not account:
            return None
        usage = await self.redis.hgetall(box.usage)
        fields = {as_text(k): as_text(v) for k, v in account.items()}
        counts = {as_text(k): int(v) for k, v in usage.items()}
        send_limit = Rate.from_stored(fields.get("send_limit", ""))
        return User(
            normalize_address(address),
            int(fields.get("quota", "0")),
            float(fields.get("created", "0")),
            counts.get("messages", 0),
            counts.get("bytes", 0),
            None if send_limit is None else str(send_limit),
        )

    async def user_exists(self, address: str) -> bool:
        return bool(await self.redis.exists(self.keys.mailbox(address).account))

    async def list_users(self) -> list[str]:
        return sorted(as_text(u) for u in await self.redis.smembers(self.keys.users))

    async def set_password(self, address: str, password: str) -> None:
        if not password:
            raise AccountError("the password must not be empty")
        if not await self._update_field(address, "password", hash_password(password)):
            raise NotFoundError(f"no such user {normalize_address(address)}")

    async def set_quota(self, address: str, quota: int) -> None:
        if quota < 0:
            raise AccountError("the quota must be zero (none) or a positive number of bytes")
        if not await self._update_field(address, "quota", str(quota)):
            raise NotFoundError(f"no such user {normalize_address(address)}")

    async def set_send_limit(self, address: str, limit: Rate | None) -> None:
        """The account's own send limit; None: back to the default (POSTROOM_SEND_LIMIT of the ingress). The count
        starts afresh under the new limit."""
        if not await self._update_field(address, "send_limit", "" if limit is None else limit.stored()):
            raise NotFoundError(f"no such user {normalize_address(address)}")
        box = self.keys.mailbox(address)
        await self.redis.delete(box.send_messages, box.send_recipients)

    async def authenticate(self, address: str, password: str) -> bool:
        """True when the password is right; equal work for unknown users; rehashes when parameters changed."""
        try:
            box = self.keys.mailbox(account_address(address))
        except AddressError:
            await verify_password(None, password)
            return False
        stored = await self.redis.hget(box.account, "password")
        valid, needs_rehash = await verify_password(as_text(stored) if stored else None, password)
        if valid and needs_rehash and stored is not None:
            # Compare-and-set: a password changed (or an account removed) meanwhile stays as it is. Hashed on the
            # argon2 pool like the check, not on the loop that serves every other session of this process.
            rehashed = await hash_password_off_loop(password)
            if int(await self._update(keys=[box.account], args=["password", rehashed, as_text(stored)])) == 1:
                # The next login finds the new hash: without this it would pay a full check once more.
                remember(rehashed, password)
        return valid

    # -- aliases ---------------------------------------------------------------------------------------------
    async def add_alias(self, source: str, targets: list[str]) -> None:
        source = normalize_address(source)
        if source.startswith("@"):
            domain = validate_domain(source[1:])
        else:
            source = normalize_address(validate_address(source))
            domain = split_address(source)[1]
        if not await self.is_local_domain(domain):
            raise AccountError(f"{domain} is not a local domain")
        if not targets:
            raise AccountError("an alias needs at least one target")
        if len(targets) > MAX_ALIAS_TARGETS:
            raise AccountError(f"an alias has at most {MAX_ALIAS_TARGETS} targets")
        clean = [normalize_address(validate_address(t)) for t in targets]
        await self.redis.hset(self.keys.aliases, source, json.dumps(clean))

    async def remove_alias(self, source: str) -> bool:
        return bool(await self.redis.hdel(self.keys.aliases, normalize_address(source)))

    async def list_aliases(self) -> dict[str, list[str]]:
        raw = await self.redis.hgetall(self.keys.aliases)
        return {as_text(k): json.loads(as_text(v)) for k, v in sorted(raw.items())}

    async def alias_targets(self, source: str) -> list[str] | None:
        raw = await self.redis.hget(self.keys.aliases, normalize_address(source))
        return None if raw is None else list(json.loads(as_text(raw)))

    async def recipient_exists(self, address: str) -> bool:
        """Would local delivery accept this address: a user, an alias, or a catch-all of its domain."""
        return (await self.lookup(address)).deliverable

    async def lookup(self, address: str) -> AddressFacts:
        """Domain, user, alias and catch-all facts of an address in one round trip (RCPT time and routing).

        A non-transactional pipeline of single-key reads: redis-py's cluster client splits it per node, so it stays
        Redis Cluster safe although the keys live in different slots. With a coalescer (the delivery's), the reads
        share their round trip with those of concurrent callers.
        """
        return _facts(await round_trip(self.redis, self.coalescer, lambda pipe: self._lookup_commands(pipe, address)))

    def _lookup_commands(self, pipe: Any, address: str) -> int:
        address = normalize_address(address)
        domain = address.rpartition("@")[2]
        pipe.sismember(self.keys.domains, domain)
        pipe.exists(self.keys.mailbox(address).account)
        pipe.hmget(self.keys.aliases, [address, "@" + domain])
        return 3


def _facts(replies: list[Any]) -> AddressFacts:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    local_domain, user, (aliases, catch_all) = replies
    return AddressFacts(
        local_domain=bool(local_domain),
        user=bool(user),
        aliases=None if aliases is None else list(json.loads(as_text(aliases))),
        catch_all=None if catch_all is None else list(json.loads(as_text(catch_all))),
    )
