"""The operator's queue actions (list, flush, hold, release, delete), shared by the CLI and the admin API.

Each action checks every queue id first (an unknown one changes nothing), changes the index (queue_index.py), moves
copies out of the delay queues where the action needs the message now (queue_flush.py), and records a trace event
for each message it touched (`postroom trace QUEUE_ID`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.store import Store
from services.store import queue_index as states
from services.store.queue_flush import flush
from services.store.queue_index import Filter, QueueEntry
from services.store.queue_ops import QueueOps
from shared.queue_id import is_queue_id

SERVICE = "admin"


class UnknownQueueId(Exception):
    """A queue id that is not in the index (never deferred, finished, or mistyped); the text is safe to show."""


class WrongState(Exception):
    """The message's state does not allow the action (e.g. releasing one that is not held)."""


@dataclass
class FlushReport:
    """Queue ids brought to `incoming`; not waiting in a delay queue now (being delivered, or held); gone (an
    overdue entry without any copy, removed from the index)."""

    flushed: list[str] = field(default_factory=list)
    not_waiting: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


class QueueAdmin:
    """The actions over one store and one broker connection; `by` names the caller in trace events (cli, api)."""

    def __init__(self, store: Store, ops: QueueOps, by: str) -> None:
        self.store = store
        self.ops = ops
        self.by = by

    async def entries(self, where: Filter | None = None) -> list[QueueEntry]:
        return await self.store.queue.entries(where)

    async def _known(self, queue_ids: Iterable[str]) -> list[QueueEntry]:
        found = []
        for queue_id in dict.fromkeys(queue_ids):
            entry = await self.store.queue.get(queue_id) if is_queue_id(queue_id) else None
            if entry is None:
                raise UnknownQueueId(f"unknown queue id {queue_id} (not queued: finished, never deferred, or mistyped)")
            found.append(entry)
        return found

    async def flush(self, queue_ids: Iterable[str] = (), domain: str = "", everything: bool = False) -> FlushReport:
        """Retry now: the chosen messages (not held ones) leave their delay queues for `incoming`."""
        if everything or domain:
            chosen = await self.entries(Filter(states=(states.DEFERRED, states.DELETED), domain=domain))
        else:
            chosen = await self._known(queue_ids)
        report = await self._flush([e for e in chosen if e.state != states.HELD])
        report.not_waiting += [e.queue_id for e in chosen if e.state == states.HELD]
        return report

    async def _flush(self, chosen: list[QueueEntry]) -> FlushReport:
        report = FlushReport()
        if not chosen:
            return report
        wanted = {e.queue_id: e for e in chosen}

        unwritten: list[Exception] = []

        async def moving(queue_ids: list[str]) -> None:
            # Traced as each batch's copies reach `incoming`, ahead of the delivery's events for them. A failed
            # write is raised once the flush is done: raised here it would leave the batch's originals unacked.
            for queue_id in queue_ids:
                if unwritten:
                    return
                try:
                    await self._trace(queue_id, "flushed")
                except Exception as exc:
                    unwritten.append(exc)

        moved = set(await flush(self.ops, wanted.__contains__, self._due, moving))
        if unwritten:
            raise unwritten[0]
        now = time.time()
        for queue_id, entry in wanted.items():
            if queue_id in moved:
                report.flushed.append(queue_id)
            elif entry.overdue(now) and await self._still_overdue(queue_id, now):
                # Long past its next attempt and in no delay queue: its copy is gone (a purged or lost queue).
                await self.store.queue.forget(queue_id)
                report.gone.append(queue_id)
                await self._trace(queue_id, "forgotten", reason="no copy of the message in any delay queue")
            else:
                report.not_waiting.append(queue_id)
        return report

    async def _still_overdue(self, queue_id: str, now: float) -> bool:
        entry = await self.store.queue.get(queue_id)
        return entry is not None and entry.overdue(now)

    async def _due(self, queue_ids: list[str]) -> dict[str, float]:
        due = {}
        for queue_id in dict.fromkeys(queue_ids):
            entry = await self.store.queue.get(queue_id) if is_queue_id(queue_id) else None
            if entry is not None and entry.next_attempt is not None:
                due[queue_id] = entry.next_attempt
        return due

    async def hold(self, queue_ids: Iterable[str]) -> list[str]:
        """Not attempted until released (queue_control.py says where it waits meanwhile)."""
        entries = await self._known(queue_ids)
        for entry in entries:
            if entry.state not in (states.DEFERRED, states.ACTIVE, states.HELD):
                raise WrongState(f"{entry.queue_id} is {entry.state}; only a deferred or active message can be held")
        held = []
        for entry in entries:
            if await self.store.queue.set_state(entry.queue_id, states.HELD, (states.DEFERRED, states.ACTIVE)) == 1:
                held.append(entry.queue_id)
                await self._trace(entry.queue_id, "held")
        return held

    async def release(self, queue_ids: Iterable[str]) -> FlushReport:
        """Held messages go back to the queue and are retried now."""
        entries = await self._known(queue_ids)
        for entry in entries:
            if entry.state != states.HELD:
                raise WrongState(f"{entry.queue_id} is {entry.state}, not held")
        released = []
        for entry in entries:
            if await self.store.queue.set_state(entry.queue_id, states.DEFERRED, (states.HELD,)) == 1:
                released.append(entry)
                await self._trace(entry.queue_id, "released")
        return await self._flush(released)

    async def delete(self, queue_ids: Iterable[str], bounce: bool) -> FlushReport:
        """Never attempted again; with `bounce`, returned to the sender (the delivery composes the report from the
        copy's body, which a flush brings to it now)."""
        entries = await self._known(queue_ids)
        deleted = []
        for entry in entries:
            if await self.store.queue.delete(entry.queue_id, bounce):
                deleted.append(entry)
                await self._trace(entry.queue_id, "deleted", bounce=bounce)
        report = FlushReport()
        if bounce:
            report = await self._flush(deleted)
        return report

    async def purge_dead(self) -> int:
        """Delete every dead letter, and the index entries that said `dead` (their messages are gone now)."""
        purged = await self.ops.purge()
        for entry in await self.entries(Filter(states=(states.DEAD,))):
            await self.store.queue.forget(entry.queue_id)
            await self._trace(entry.queue_id, "forgotten", reason="dead letters purged")
        return purged

    async def _trace(self, queue_id: str, event: str, **fields: object) -> None:
        await self.store.trace.record(queue_id, event, SERVICE, by=self.by, **fields)
