"""The queue index: one entry in Redis per message not yet finished, which the operator lists and steers.

Who writes what. The delivery creates an entry when it defers a message (state `deferred`), in the same script as
the message's progress record (queue_lua.QUEUE_RECORD); it marks it `active` when a copy of the message comes back
for an attempt (QUEUE_CLAIM), `dead` when the message is handed to the dead-letter queue, and deletes it when the
message is finished. A first attempt with remote recipients (a relay: slow, and what an operator may want to hold)
creates the entry `active` before relaying; a fresh message delivered only locally never has one (no round trip
more on the hot path), and a message waiting in `incoming` for its first attempt is not listed.

What keeps a copy from being worked on twice is not the index but the progress record: a copy of a message that
may have been worked on before (any retry copy, a redelivery) reads it and skips every recipient settled there, and
such a copy records every outcome before its next step. So a second copy of a message (a flush cut short by a crash,
a held message parked twice) finds its recipients settled by the first and ends without an attempt; the entry is
removed only when every recipient of the copy has a final state, not when a later copy carries some of them.

The operator's states: `held` (hold) is kept by every delivery write until `release`; `deleted` (delete --bounce)
waits for the delivery to compose the report. A deleted message's recipients are `deleted` in its progress record,
a final state, so no copy of it is ever attempted again whatever the entry says.

Staleness: the listing set (`{ns}:queue-ids`) is added to before an entry is written and removed from after it is
deleted; a member without an entry is removed by the listing. An entry whose copy is gone (a purged or lost queue)
is `overdue`: its next attempt is long past, or it has been active for longer than any attempt lasts; a flush
that finds no copy of it removes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from services.store import queue_lua
from services.store.keys import Keys
from services.store.part import Part, as_text

ACTIVE = "active"
DEFERRED = "deferred"
HELD = "held"
DEAD = "dead"
DELETED = "deleted"
STATES = (ACTIVE, DEFERRED, HELD, DEAD, DELETED)
# A deferred or held entry this long past its next attempt has lost its copy (see the module docstring).
OVERDUE_AFTER = 600.0
# An active entry not claimed again for this long has lost its copy too: no attempt holds a message longer than
# RabbitMQ's consumer_timeout (1 hour in the deploy files); a poison message the broker dead-lettered after
# crashing its workers ends so (`postroom queue dead list` shows it).
ACTIVE_OVERDUE_AFTER = 2 * 3600.0


@dataclass(frozen=True)
class QueueEntry:
    """What the operator sees of one queued message."""

    queue_id: str
    state: str
    arrival: float
    sender: str
    recipients: list[str]
    attempts: int
    last_error: str
    next_attempt: float | None
    size: int
    bounce: bool = False
    updated: float = 0.0

    def overdue(self, now: float) -> bool:
        if self.state == ACTIVE:
            return bool(self.updated) and now - self.updated > ACTIVE_OVERDUE_AFTER
        return (
            self.state in (DEFERRED, HELD) and self.next_attempt is not None and now - self.next_attempt > OVERDUE_AFTER
        )

    def domains(self) -> set[str]:
        return {r.rpartition("@")[2].lower() for r in self.recipients}

    def as_json(self, now: float) -> dict[str, Any]:
        return {**asdict(self), "overdue": self.overdue(now)}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _entry(queue_id: str, raw: Mapping[Any, Any]) -> QueueEntry | None:
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    if "state" not in fields:
        return None
    try:
        recipients = [str(r) for r in json.loads(fields.get("recipients", "[]"))]
    except ValueError:
        recipients = []
    return QueueEntry(
        queue_id=queue_id,
        state=fields["state"],
        arrival=_float(fields.get("arrival")) or 0.0,
        sender=fields.get("sender", ""),
        recipients=recipients,
        attempts=int(_float(fields.get("attempts")) or 0),
        last_error=fields.get("last_error", ""),
        next_attempt=_float(fields.get("next_attempt")),
        size=int(_float(fields.get("size")) or 0),
        bounce=fields.get("bounce") == "1",
        updated=_float(fields.get("updated")) or 0.0,
    )


@dataclass(frozen=True)
class Claim:
    """What QUEUE_CLAIM found: the entry's state before the claim ("" without an entry), and its bounce flag."""

    state: str = ""
    bounce: bool = False


@dataclass(frozen=True)
class Filter:
    """Which entries a listing or a bulk action takes (all given conditions must hold)."""

    states: tuple[str, ...] = ()
    sender: str = ""
    recipient: str = ""
    domain: str = ""

    def matches(self, entry: QueueEntry) -> bool:
        if self.states and entry.state not in self.states:
            return False
        if self.sender and entry.sender.lower() != self.sender.lower():
            return False
        if self.recipient and self.recipient.lower() not in (r.lower() for r in entry.recipients):
            return False
        return not self.domain or self.domain.lower().rstrip(".") in entry.domains()


class QueueIndex(Part):
    """Reads and changes queue entries; `ttl` is how long a finished message's progress record lasts."""

    def __init__(self, redis: Any, keys: Keys, ttl: int) -> None:
        super().__init__(redis, keys)
        self.ttl = ttl
        self._record = redis.register_script(queue_lua.QUEUE_RECORD)
        self._claim = redis.register_script(queue_lua.QUEUE_CLAIM)
        self._set_state = redis.register_script(queue_lua.QUEUE_SET_STATE)
        self._delete = redis.register_script(queue_lua.QUEUE_DELETE)

    # -- the delivery's side ---------------------------------------------------------------------------------------
    async def record(
        self,
        queue_id: str,
        states: Mapping[str, str],
        keep: bool,
        mode: str,
        fields: Mapping[str, str | int | float] | None = None,
    ) -> None:
        """Progress `states` and the entry in one script: `mode` defer, active or dead sets `fields` (creating the
        entry), idle turns an active entry deferred again, finish deletes it. `keep`: the progress record without a
        TTL."""
        if mode in ("defer", "active", "dead"):
            # Listed before the entry exists: a crash in between leaves a member the listing removes.
            await self.redis.zadd(self.keys.queue_ids, {queue_id: float((fields or {}).get("arrival", time.time()))})
        args: list[str | int | float] = [0 if keep else self.ttl, len(states)]
        for recipient, state in states.items():
            args += [recipient, state]
        args.append(mode)
        if fields is not None:
            # `attempts` last: the script compares it with the entry's (never moving it backwards).
            for name, value in sorted(fields.items(), key=lambda item: item[0] == "attempts"):
                args += [name, value]
        await self._record(keys=[self.keys.progress(queue_id), self.keys.queue_entry(queue_id)], args=args)
        if mode == "finish":
            await self.redis.zrem(self.keys.queue_ids, queue_id)

    async def claim(self, queue_id: str) -> Claim:
        """A copy comes to be attempted: the entry turns `active` (unless held or deleted), its state before."""
        reply = [as_text(v) for v in await self._claim(keys=[self.keys.queue_entry(queue_id)], args=[time.time()])]
        return Claim(reply[0], reply[1] == "1") if reply else Claim()

    # -- the operator's side ---------------------------------------------------------------------------------------
    async def get(self, queue_id: str) -> QueueEntry | None:
        return _entry(queue_id, await self.redis.hgetall(self.keys.queue_entry(queue_id)))

    async def entries(self, where: Filter | None = None) -> list[QueueEntry]:
        """Every entry matching `where`, oldest arrival first; listing members without an entry are removed."""
        return await read_entries(self.redis, self.keys, where)

    async def set_state(self, queue_id: str, state: str, allowed: Iterable[str]) -> int:
        """1 changed (or already so), 0 no entry, -1 the entry's state does not allow it."""
        args = [state, *allowed, time.time()]
        return int(await self._set_state(keys=[self.keys.queue_entry(queue_id)], args=args))

    async def delete(self, queue_id: str, bounce: bool) -> bool:
        """False when there is no entry."""
        keys = [self.keys.progress(queue_id), self.keys.queue_entry(queue_id)]
        done = bool(await self._delete(keys=keys, args=[self.ttl, "1" if bounce else "", time.time()]))
        if done and not bounce:
            await self.redis.zrem(self.keys.queue_ids, queue_id)
        return done

    async def forget(self, queue_id: str) -> None:
        """Remove an entry whose message is gone (no copy anywhere)."""
        await self.redis.delete(self.keys.queue_entry(queue_id))
        await self.redis.zrem(self.keys.queue_ids, queue_id)


async def read_entries(redis: Any, keys: Keys, where: Filter | None = None) -> list[QueueEntry]:
    """Every entry matching `where`, oldest arrival first, read in pipelined batches (single keys: cluster-safe);
    listing members without an entry are removed."""
    ids = [as_text(i) for i in await redis.zrange(keys.queue_ids, 0, -1)]
    found: list[QueueEntry] = []
    gone: list[str] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for queue_id in chunk:
                pipe.hgetall(keys.queue_entry(queue_id))
            replies = await pipe.execute()
        for queue_id, raw in zip(chunk, replies, strict=True):
            entry = _entry(queue_id, raw)
            if entry is None:
                gone.append(queue_id)
            elif where is None or where.matches(entry):
                found.append(entry)
    for queue_id in gone:
        # Only those still without an entry: one may have been deferred again since it was read.
        if not await redis.exists(keys.queue_entry(queue_id)):
            await redis.zrem(keys.queue_ids, queue_id)
    return found


async def count_states(redis: Any, keys: Keys) -> dict[str, int]:
    """Entries per state (every state present, zero or not): only each entry's state is read."""
    counts = dict.fromkeys(STATES, 0)
    ids = [as_text(i) for i in await redis.zrange(keys.queue_ids, 0, -1)]
    for start in range(0, len(ids), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for queue_id in ids[start : start + 1000]:
                pipe.hget(keys.queue_entry(queue_id), "state")
            for state in await pipe.execute():
                if state is not None:
                    counts[as_text(state)] = counts.get(as_text(state), 0) + 1
    return counts
