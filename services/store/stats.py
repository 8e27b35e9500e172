"""Totals over a namespace (domains, mailboxes, messages, bytes, trace events, queued messages) from Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.store.keys import Keys
from services.store.queue_index import STATES, count_states

_BATCH = 500


@dataclass(frozen=True)
class StoreStats:
    domains: int = 0
    mailboxes: int = 0
    messages: int = 0
    bytes: int = 0
    trace_events: int = 0
    # Queue index entries per state (queue_index.py): messages not yet finished.
    queue: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))


async def compute_stats(redis: Any, keys: Keys) -> StoreStats:
    """One pass: set sizes, then every mailbox's usage hash read in pipelined batches (cluster-safe: single keys)."""
    domains = int(await redis.scard(keys.domains))
    users = list(await redis.smembers(keys.users))
    messages = total_bytes = 0
    for start in range(0, len(users), _BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for address in users[start : start + _BATCH]:
                text = address.decode() if isinstance(address, bytes) else str(address)
                pipe.hmget(keys.mailbox(text).usage, "messages", "bytes")
            for count, size in await pipe.execute():
                messages += int(count or 0)
                total_bytes += int(size or 0)
    trace_events = int(await redis.get(keys.trace_events) or 0)
    queue = await count_states(redis, keys)
    return StoreStats(domains, len(users), messages, total_bytes, trace_events, queue)
