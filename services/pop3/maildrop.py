"""An open maildrop: the lock held by this session, the snapshot taken at login and the messages marked deleted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from services.store import MessageInfo, Store
from shared.logging import get_logger
from shared.tasks import cancel_and_wait

log = get_logger(__name__)

# At most this many bytes of read-ahead bodies are held per session (pipelined RETRs, see `prefetch`): four default
# chunks, so thousands of sessions cannot multiply it into gigabytes; 25 bodies of 10 KiB per round trip.
PREFETCH_BUDGET = 256 << 10


class MessageGone(Exception):
    """The snapshot lists a message whose body is no longer stored (e.g. the account was removed)."""


class WholeBody:
    """A message read whole in its first chunk: iterates once like `_rest`, but the session can take `body` directly
    (no async generator to create, step twice and close per RETR, which is most messages)."""

    __slots__ = ("_taken", "body")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._taken = False

    def __aiter__(self) -> WholeBody:
        return self

    async def __anext__(self) -> bytes:
        if self._taken:
            raise StopAsyncIteration
        self._taken = True
        return self.body

    async def aclose(self) -> None:
        self._taken = True


class Maildrop:
    """RFC 1939 §8 exclusive access plus the session's view: a snapshot that later deliveries do not change."""

    def __init__(self, store: Store, address: str, token: str, messages: list[MessageInfo], lock_ttl: float) -> None:
        self.store = store
        self.address = address
        self.token = token
        self.messages = messages
        self.lock_ttl = lock_ttl
        self.deleted: set[int] = set()
        # STAT's totals, kept as messages are marked and unmarked: STAT costs the same for 10 or 100,000 messages.
        self._total_octets = sum(info.size for info in messages)
        self._deleted_octets = 0
        self.lock_lost = False
        self._refresher: asyncio.Task[None] | None = None
        self._prefetched: dict[str, bytes] = {}
        self._prefetched_chunk = 0

    @classmethod
    async def open(cls, store: Store, address: str, lock_ttl: float) -> Maildrop | None:
        """Lock, then snapshot (so nothing can delete between the two); None when another session holds it."""
        token = await store.mailboxes.acquire_lock(address, lock_ttl)
        if token is None:
            return None
        try:
            messages = await store.mailboxes.snapshot(address)
        except BaseException:
            with contextlib.suppress(Exception):
                await store.mailboxes.release_lock(address, token)
            raise
        maildrop = cls(store, address, token, messages, lock_ttl)
        maildrop._refresher = asyncio.create_task(maildrop._keep_lock(), name=f"pop3-lock-{address}")
        return maildrop

    # -- the session's view ------------------------------------------------------------------------------------
    def get(self, msg: int) -> MessageInfo | None:
        """Message number `msg` (1-based) unless it does not exist or is marked deleted."""
        if not 1 <= msg <= len(self.messages) or msg in self.deleted:
            return None
        return self.messages[msg - 1]

    def exists(self, msg: int) -> bool:
        return 1 <= msg <= len(self.messages)

    def visible(self) -> list[tuple[int, MessageInfo]]:
        return [(n, info) for n, info in enumerate(self.messages, 1) if n not in self.deleted]

    def stat(self) -> tuple[int, int]:
        return len(self.messages) - len(self.deleted), self._total_octets - self._deleted_octets

    def mark_deleted(self, msg: int) -> None:
        if msg not in self.deleted and self.exists(msg):
            self.deleted.add(msg)
            self._deleted_octets += self.messages[msg - 1].size

    def reset(self) -> None:
        self.deleted.clear()
        self._deleted_octets = 0

    # -- reading -----------------------------------------------------------------------------------------------
    def is_prefetched(self, msg: int) -> bool:
        info = self.get(msg)
        return info is not None and info.uid in self._prefetched

    async def prefetch(self, msgs: Iterable[int], chunk_size: int) -> None:
        """Read the messages a pipelined batch of RETR/TOP will ask for, in one round trip, if each is one chunk.

        Only a cache: `open_message` takes an entry once, and reads for itself what is not (or no longer) here.
        Bodies never change while they exist, so a body read a moment early is the body the RETR would read.
        """
        self._prefetched.clear()
        uids: list[str] = []
        budget = PREFETCH_BUDGET
        for msg in msgs:
            info = self.get(msg)
            # A bigger message is streamed chunk by chunk as before; one more round trip is small next to it.
            if info is None or info.size > chunk_size or info.uid in uids:
                continue
            budget -= info.size
            if budget < 0:
                break
            uids.append(info.uid)
        if len(uids) < 2:
            return  # one message: the ordinary read costs the same round trip
        bodies = await self.store.mailboxes.read_many(self.address, uids)
        # A body longer than the snapshot's size (not written by the store) is left to the chunked read.
        self._prefetched = {
            uid: body for uid, body in zip(uids, bodies, strict=True) if body and len(body) <= chunk_size
        }
        self._prefetched_chunk = chunk_size

    async def open_message(self, info: MessageInfo, chunk_size: int) -> AsyncIterator[bytes]:
        """Read the first chunk now (so a missing body is known before `+OK`), the rest lazily."""
        mailboxes = self.store.mailboxes
        first = self._prefetched.pop(info.uid, None) if chunk_size == self._prefetched_chunk else None
        if first is None:
            first = await mailboxes.read_range(self.address, info.uid, 0, chunk_size - 1)
        if not first:
            raise MessageGone(info.uid)
        if len(first) < chunk_size and len(first) >= info.size:
            return WholeBody(first)  # what `_rest` would yield, and it would raise nothing after it
        return self._rest(info, first, chunk_size)

    async def _rest(self, info: MessageInfo, first: bytes, chunk_size: int) -> AsyncIterator[bytes]:
        chunk, offset = first, 0
        while True:
            yield chunk
            offset += len(chunk)
            if len(chunk) < chunk_size:
                break
            chunk = await self.store.mailboxes.read_range(self.address, info.uid, offset, offset + chunk_size - 1)
            if not chunk:
                break
        if offset < info.size:
            # Removed while we were sending it (the account was deleted): the transfer must fail, not look complete.
            raise MessageGone(info.uid)

    # -- update and lock ---------------------------------------------------------------------------------------
    async def commit(self) -> int | None:
        """RFC 1939 §6: remove the messages marked deleted, atomically and only while we own the lock."""
        uids = [self.messages[n - 1].uid for n in sorted(self.deleted)]
        if not uids:
            return 0
        return await self.store.mailboxes.delete(self.address, self.token, uids)

    async def _keep_lock(self) -> None:
        # Refresh at a third of the TTL so one missed refresh (a Redis hiccup) does not lose the lock.
        interval = max(self.lock_ttl / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                refreshed = await self.store.mailboxes.refresh_lock(self.address, self.token, self.lock_ttl)
            except Exception as exc:
                log.warning("pop3 lock refresh failed", address=self.address, error=str(exc))
                continue
            if not refreshed:
                self.lock_lost = True
                log.warning("pop3 maildrop lock lost", address=self.address)
                return

    async def close(self) -> None:
        """Stop refreshing and release the lock now (RFC 1939 §8: the next session must not wait for a TTL)."""
        if self._refresher is not None:
            await cancel_and_wait(self._refresher)
            self._refresher = None
        try:
            await self.store.mailboxes.release_lock(self.address, self.token)
        except Exception as exc:  # the TTL frees it later; nothing was deleted either way
            log.warning("pop3 lock release failed", address=self.address, error=str(exc))

    def __repr__(self) -> str:
        return f"Maildrop({self.address!r}, {len(self.messages)} messages, {len(self.deleted)} deleted)"
