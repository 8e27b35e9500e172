"""The trace of a message's life: events recorded by every service, kept in Redis with a bounded size and a TTL."""

from __future__ import annotations

import json
import time
from typing import Any

from services.store.keys import Keys

# An event list never grows past this, whatever a looping message does; the oldest events are kept.
MAX_EVENTS = 200
DEFAULT_RETENTION = 7 * 86400


class Trace:
    """Append and read the events of one queue id (`{ns}:trace:{queue_id}`, a list of JSON objects)."""

    def __init__(self, redis: Any, namespace: str, retention: int = DEFAULT_RETENTION) -> None:
        self.redis = redis
        self.namespace = namespace
        self.retention = retention
        self.keys = Keys(namespace)

    def key(self, queue_id: str) -> str:
        return self.keys.trace(queue_id)

    async def record(self, queue_id: str, event: str, service: str, **fields: Any) -> None:
        """Append one event; failures to trace never fail the mail path, so callers may ignore exceptions."""
        await self.record_many(queue_id, service, [(event, fields)])

    async def record_many(self, queue_id: str, service: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Append several events in order with one round trip (delivery writes two per recipient)."""
        if not events:
            return
        now = time.time()
        entries = [
            json.dumps({"time": now, "event": event, "service": service, **fields}, default=str)
            for event, fields in events
        ]
        key = self.key(queue_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *entries)
            pipe.ltrim(key, 0, MAX_EVENTS - 1)
            pipe.expire(key, self.retention)
            # Another slot: fine in a non-transactional pipeline, which redis-py's cluster client splits per node.
            pipe.incrby(self.keys.trace_events, len(entries))
            await pipe.execute()

    async def events(self, queue_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.key(queue_id), 0, -1)
        return [json.loads(item) for item in raw]
