"""The trace of a message's life: events recorded by every service, kept in Redis with a bounded size and a TTL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from services.store import lua
from services.store.coalesce import Coalescer, round_trip
from services.store.keys import Keys
from shared.logging import get_logger
from shared.tasks import cancel_and_wait

log = get_logger(__name__)

# An event list never grows past this, whatever a looping message does; the oldest events are kept.
MAX_EVENTS = 200
DEFAULT_RETENTION = 7 * 86400
# Posted events waiting for the writer. Only a hanging Redis lets them pile up (a refusing one fails each write at
# once); past this bound new events are dropped, so tracing never holds memory or mail hostage.
MAX_PENDING = 10_000
# How long an orderly shutdown waits for the last write.
CLOSE_TIMEOUT = 5.0
# Events of one key per script call, well under what Lua's unpack takes in one go.
_CALL_EVENTS = 1000

DROPPED = Counter(
    "postroom_trace_events_dropped_total",
    "Trace events this process posted but never wrote (Redis unreachable or too slow, or posted after shutdown).",
)

Events = list[tuple[str, dict[str, Any]]]


class Trace:
    """Append and read the events of one queue id (`{ns}:trace:{queue_id}`, a list of JSON objects).

    `record`/`record_many` write at once and report errors. `post` is for the mail path: it only queues the
    events, and one background task writes everything pending in one pipeline whenever its previous write is done,
    so under load many messages share a round trip, and an idle service writes each event right away (no timer).
    """

    def __init__(
        self,
        redis: Any,
        namespace: str,
        retention: int = DEFAULT_RETENTION,
        max_pending: int = MAX_PENDING,
        coalescer: Coalescer | None = None,
    ) -> None:
        self.redis = redis
        self.coalescer = coalescer
        self.namespace = namespace
        self.retention = retention
        self.keys = Keys(namespace)
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: list[tuple[str, list[str]]] = []
        self._pending_events = 0
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._append = redis.register_script(lua.APPEND_TRACE)

    def key(self, queue_id: str) -> str:
        return self.keys.trace(queue_id)

    async def record(self, queue_id: str, event: str, service: str, **fields: Any) -> None:
        """Append one event; failures to trace never fail the mail path, so callers may ignore exceptions."""
        await self.record_many(queue_id, service, [(event, fields)])

    async def record_many(self, queue_id: str, service: str, events: Events) -> None:
        """Append several events in order with one round trip."""
        if events:
            await self._write([(queue_id, _encode(service, events))])

    def post(self, queue_id: str, service: str, events: Events) -> None:
        """Queue events for the background writer and return at once; never raises, never waits.

        The events keep the time of the post. Events of one process are written in the order they were posted.
        """
        if not events:
            return
        if self._closed or self._pending_events + len(events) > self.max_pending:
            self._drop(len(events))
            return
        self._pending.append((queue_id, _encode(service, events)))
        self._pending_events += len(events)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write what is pending (waiting at most `timeout`), then accept no more posts: an orderly shutdown."""
        self._closed = True
        writer = self._writer
        if writer is None:
            return
        await asyncio.wait({writer}, timeout=timeout)
        await cancel_and_wait(writer)
        self._drop(self._pending_events)
        self._pending, self._pending_events = [], 0

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending, self._pending_events = self._pending, [], 0
                try:
                    await self._write(batch)
                except asyncio.CancelledError:
                    self._drop(sum(len(entries) for _, entries in batch))
                    raise
                except Exception as exc:
                    lost = sum(len(entries) for _, entries in batch)
                    self._drop(lost)
                    log.warning("trace write failed; events dropped", events=lost, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._writer = None

    def _drop(self, count: int) -> None:
        if count:
            self.dropped += count
            DROPPED.inc(count)

    async def _write(self, batch: list[tuple[str, list[str]]]) -> None:
        """One non-transactional pipeline for the whole batch: redis-py's cluster client splits it per node, so the
        trace keys (one slot each) and the events counter (another) stay Redis Cluster safe. Each key takes one
        script call (lua.APPEND_TRACE); on a cluster, whose pipelines take no scripts, RPUSH, LTRIM and EXPIRE."""
        by_key: dict[str, list[str]] = {}
        for queue_id, entries in batch:
            by_key.setdefault(self.key(queue_id), []).extend(entries)
        cluster = isinstance(self.redis, RedisCluster)
        calls = [
            (key, entries[i : i + _CALL_EVENTS])
            for key, entries in by_key.items()
            for i in range(0, len(entries), _CALL_EVENTS)
        ]

        def commands(pipe: Any) -> int:
            for key, entries in calls:
                if cluster:
                    pipe.rpush(key, *entries)
                    pipe.ltrim(key, 0, MAX_EVENTS - 1)
                    pipe.expire(key, self.retention)
                else:
                    # EVALSHA, not the Script object: redis-py would ask SCRIPT EXISTS first, one more round trip.
                    pipe.evalsha(self._append.sha, 1, key, MAX_EVENTS, self.retention, *entries)
            pipe.incrby(self.keys.trace_events, sum(len(entries) for entries in by_key.values()))
            return (3 if cluster else 1) * len(calls) + 1

        # With a coalescer: along with the lookups and stores of the moment, one round trip for all of them.
        replies = await round_trip(self.redis, self.coalescer, commands)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and not cluster:
                # A script cache emptied by a Redis restart: nothing ran; the ordinary call loads the script.
                key, entries = calls[i]
                await self._append(keys=[key], args=[MAX_EVENTS, self.retention, *entries])
            elif isinstance(reply, Exception):
                raise reply

    async def events(self, queue_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(self.key(queue_id), 0, -1)
        return [json.loads(item) for item in raw]


# json.dumps(..., default=str) would build an encoder per call; this one gives the same text.
_JSON = json.JSONEncoder(default=str)


def _encode(service: str, events: Events) -> list[str]:
    now = time.time()
    return [_JSON.encode({"time": now, "event": event, "service": service, **fields}) for event, fields in events]
