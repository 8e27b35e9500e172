"""Mailboxes: idempotent atomic delivery, consistent snapshots, reading, lock-guarded deletion, maildrop locks."""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from services.store import lua
from services.store.coalesce import Coalescer, round_trip
from services.store.keys import Keys
from services.store.part import Part, as_text
from shared.dotstuff import crlf_only, wire_form

# A queue message redelivered within this time is recognised and stored once; longer than any queue lifetime.
DEFAULT_DEDUP_TTL = 8 * 86400


class StoreOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    OVER_QUOTA = "over_quota"
    NO_MAILBOX = "no_mailbox"


# The store script's status codes (lua.STORE_MESSAGE).
_STORE_OUTCOMES = {
    1: StoreOutcome.STORED,
    0: StoreOutcome.DUPLICATE,
    -1: StoreOutcome.OVER_QUOTA,
    -2: StoreOutcome.NO_MAILBOX,
}


@dataclass(frozen=True)
class MessageInfo:
    uid: str
    size: int
    # Stored in wire form (shared.dotstuff.wire_form): RETR sends it as it is, with no pass over its bytes.
    wire: bool = False


def _store_result(reply: Any) -> StoreOutcome | Exception:
    """The outcome of one store script call, or its error; anything worse than an Exception is raised."""
    if isinstance(reply, BaseException) and not isinstance(reply, Exception):
        raise reply
    return reply if isinstance(reply, Exception) else _STORE_OUTCOMES[int(reply[0])]


def to_crlf(data: bytes) -> bytes:
    """Every line end as CRLF: what we store is exactly what POP3 counts and sends."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    if crlf_only(data):
        return data  # already clean (what the ingress queues): checked in windows, a 25 MiB body stays one copy
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _store_args(uid: str, message: bytes, third: int, header: bytes) -> list[Any]:
    """The store script's ARGV: the body with CRLF line ends and whether header + body are in wire form."""
    body = to_crlf(message)
    return [uid, body, third, header, b"1" if wire_form(header, body) else b"0"]


class Mailboxes(Part):
    """Operations on mailboxes; every multi-key change is one Lua script over keys of one hash slot."""

    def __init__(
        self, redis: Any, keys: Keys, dedup_ttl: int = DEFAULT_DEDUP_TTL, coalescer: Coalescer | None = None
    ) -> None:
        super().__init__(redis, keys)
        self.dedup_ttl = dedup_ttl
        self.coalescer = coalescer
        self._store = redis.register_script(lua.STORE_MESSAGE)
        self._import = redis.register_script(lua.IMPORT_MESSAGE)
        self._snapshot = redis.register_script(lua.SNAPSHOT)
        self._delete = redis.register_script(lua.DELETE_MESSAGES)
        self._refresh = redis.register_script(lua.REFRESH_LOCK)
        self._release = redis.register_script(lua.RELEASE_LOCK)
        self._acquire = redis.register_script(lua.ACQUIRE_LOCK)

    async def deliver(self, address: str, queue_id: str, message: bytes, header: bytes = b"") -> StoreOutcome:
        """Store `message` for `address` once per queue id; safe to repeat after a crash, and for ever: a uid still
        in the mailbox is a duplicate even once its dedup key expired (docs/design.md invariant 4). `header` (CRLF-ended
        lines, e.g. Return-Path) goes before the message, joined by Redis, and counts towards size and quota."""
        status, _ = await self._store(
            keys=self._store_keys(address, queue_id), args=_store_args(queue_id, message, self.dedup_ttl, header)
        )
        return _STORE_OUTCOMES[int(status)]

    async def deliver_many(
        self, addresses: Sequence[str], queue_id: str, message: bytes, header: bytes = b""
    ) -> list[StoreOutcome | Exception]:
        """`deliver` into several mailboxes in one round trip: a pipeline of the same store script, one call per
        mailbox, so each call stays atomic, idempotent and in one hash slot (invariants 4, 5 and 9). With a
        coalescer (the delivery's), the calls share their round trip with those of concurrent messages too.

        An error that belongs to one call (e.g. Redis still loading its data) is returned in that call's place.
        Losing the connection raises (on a Redis Cluster: is returned for each call it hit), and then any of the
        calls may or may not have run; the dedup keys make repeating them safe.
        """
        if len(addresses) == 1 and self.coalescer is None:
            return [await self.deliver(addresses[0], queue_id, message, header)]
        args = _store_args(queue_id, message, self.dedup_ttl, header)
        all_keys = [self._store_keys(address, queue_id) for address in addresses]
        if isinstance(self.redis, RedisCluster):
            # redis-py refuses scripts in a cluster pipeline: one call per mailbox, all at once.
            calls = (self._store(keys=keys, args=args) for keys in all_keys)
            return [_store_result(reply) for reply in await asyncio.gather(*calls, return_exceptions=True)]

        # EVALSHA rather than the Script object: redis-py checks a pipeline's scripts with SCRIPT EXISTS first,
        # one more round trip per message. A script cache emptied by a Redis restart answers NOSCRIPT (nothing
        # ran), and that call is repeated the ordinary way, which loads the script.
        def commands(pipe: Any) -> int:
            for keys in all_keys:
                pipe.evalsha(self._store.sha, len(keys), *keys, *args)
            return len(all_keys)

        replies = await round_trip(self.redis, self.coalescer, commands)
        results: list[StoreOutcome | Exception] = []
        for keys, reply in zip(all_keys, replies, strict=True):
            if isinstance(reply, NoScriptError):
                reply = await self._store(keys=keys, args=args)
            results.append(_store_result(reply))
        return results

    def _store_keys(self, address: str, queue_id: str) -> list[str]:
        box = self.keys.mailbox(address)
        uid = queue_id
        keys = [box.dedup(queue_id), box.account, box.usage, box.seq, box.index, box.sizes, box.message(uid)]
        return [*keys, box.wire]

    async def import_message(self, address: str, uid: str, message: bytes) -> StoreOutcome:
        """Store a message brought from another server under the UIDL it had there, once for the mailbox's life:
        a uid imported before (even one POP3 deleted since) or still in the mailbox is a duplicate."""
        box = self.keys.mailbox(address)
        keys = [box.imported, box.account, box.usage, box.seq, box.index, box.sizes, box.message(uid), box.wire]
        status, _ = await self._import(keys=keys, args=_store_args(uid, message, int(time.time()), b""))
        return _STORE_OUTCOMES[int(status)]

    async def stored_size(self, address: str, uid: str) -> int | None:
        """The size of the message `uid`, None when it is not in the mailbox."""
        size = await self.redis.hget(self.keys.mailbox(address).sizes, uid)
        return None if size is None else int(size)

    async def snapshot(self, address: str) -> list[MessageInfo]:
        """The messages in arrival order with their sizes, read atomically."""
        box = self.keys.mailbox(address)
        flat = await self._snapshot(keys=[box.index, box.sizes, box.wire])
        return [MessageInfo(as_text(flat[i]), int(flat[i + 1]), bool(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def read(self, address: str, uid: str) -> bytes | None:
        data = await self.redis.get(self.keys.mailbox(address).message(uid))
        return None if data is None else bytes(data)

    async def read_range(self, address: str, uid: str, start: int, end: int) -> bytes:
        """Bytes start..end inclusive, for streaming a big message without holding it whole."""
        return bytes(await self.redis.getrange(self.keys.mailbox(address).message(uid), start, end))

    async def read_many(self, address: str, uids: list[str]) -> list[bytes | None]:
        """Whole bodies of several (small) messages in one command; None for a missing one."""
        box = self.keys.mailbox(address)
        # One MGET over keys of one hash slot (Redis-Cluster safe): far less client work than a GET per body.
        values = await self.redis.mget([box.message(uid) for uid in uids])
        return [None if value is None else bytes(value) for value in values]

    async def delete(self, address: str, token: str, uids: list[str]) -> int | None:
        """Remove `uids` atomically if `token` still owns the lock; None when it does not (nothing removed)."""
        box = self.keys.mailbox(address)
        if not uids:
            return 0 if await self.owns_lock(address, token) else None
        keys = [box.lock, box.index, box.sizes, box.usage, box.wire, *(box.message(uid) for uid in uids)]
        removed = int(await self._delete(keys=keys, args=[token, *uids]))
        return None if removed < 0 else removed

    # -- maildrop lock (RFC 1939 §8: exclusive access per session) --------------------------------------------
    async def acquire_lock(self, address: str, ttl_seconds: float) -> str | None:
        """A new owner token, or None when another session holds the lock (or the account no longer exists)."""
        token = secrets.token_hex(16)
        box = self.keys.mailbox(address)
        ok = await self._acquire(keys=[box.lock, box.account], args=[token, int(ttl_seconds * 1000)])
        return token if int(ok) else None

    async def refresh_lock(self, address: str, token: str, ttl_seconds: float) -> bool:
        keys = [self.keys.mailbox(address).lock]
        return bool(await self._refresh(keys=keys, args=[token, int(ttl_seconds * 1000)]))

    async def release_lock(self, address: str, token: str) -> bool:
        return bool(await self._release(keys=[self.keys.mailbox(address).lock], args=[token]))

    async def owns_lock(self, address: str, token: str) -> bool:
        value = await self.redis.get(self.keys.mailbox(address).lock)
        return value is not None and as_text(value) == token
