"""The delivery's part in the operator's queue (services/store/queue_index.py): claim, park, delete, record.

Where a held message lives: in the broker, as a queued copy, and in the index as `held`. Hold only changes the
entry; when the copy comes due, the delivery claims it, sees `held`, and instead of attempting it parks it: the
same body is published (confirmed) to the longest delay queue as the copy of the next attempt, its recipients are
recorded `deferred:N` with the entry in one step, and only then is the old copy acked. So a held message is always
an unacked or queued message in RabbitMQ (durable quorum queues) plus its entry, never only in memory or only in
Redis. A crash before the record leaves the old copy, which is parked again (two copies then: the later one finds
its recipients carried by the other and ends); after it, the new copy is the message. `release` puts the entry
back to `deferred` and brings the copy out of its delay queue at once (a flush, services/store/queue_flush.py).

A deleted message (`delete --bounce`): its recipients are already `deleted` in the progress record (final), so the
copy is never attempted; the delivery composes the report from the copy's body, then removes the entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from services.delivery import outcome, retry
from services.delivery.ledger import Ledger
from services.delivery.outcome import RecipientOutcome
from services.delivery.publisher import DeliveryPublisher
from services.store import Store, progress
from services.store import queue_index as states
from shared.envelope import Envelope
from shared.logging import get_logger

log = get_logger(__name__)

SERVICE = "delivery"
Bounce = Callable[[Envelope, bytes, list[RecipientOutcome], float], Awaitable[None]]
DELETED_TEXT = "message deleted from the queue by the postmaster"


def entry_fields(envelope: Envelope, size: int, last_error: str, next_attempt: float) -> dict[str, str | int | float]:
    """The entry of the message `envelope` carries on (attempts last: the index compares it)."""
    return {
        "queue_id": envelope.queue_id,
        "arrival": envelope.first_seen,
        "sender": envelope.mail_from,
        "recipients": json.dumps(list(envelope.recipients)),
        "last_error": last_error,
        "next_attempt": next_attempt,
        "size": size,
        "updated": time.time(),
        "attempts": envelope.attempt,
    }


def last_error(found: RecipientOutcome) -> str:
    """One line for the listing, as mailq puts it: the reply (with its code) and the host that gave it."""
    text = found.diagnostic if found.diagnostic[:1].isdigit() else f"{found.enhanced} {found.diagnostic}"
    return f"{text} (host {found.remote_mta})" if found.remote_mta else text


class QueueControl:
    """Claims each copy of a deferred message before it is attempted and records the entry after."""

    def __init__(self, store: Store, publisher: DeliveryPublisher, schedule: tuple[int, ...], bounce: Bounce) -> None:
        self.store = store
        self.publisher = publisher
        self.schedule = schedule
        self.bounce = bounce

    async def admit(self, envelope: Envelope, body: bytes, ledger: Ledger) -> bool:
        """True when the copy is to be delivered as usual; otherwise it was handled here (parked as held, or
        finished as deleted) and is to be acked. Only a copy that may be a deferred message's has an entry."""
        if not ledger.may_be_partly_done:
            return True
        # Every outcome recorded before the next step: another copy of the message (a flush or park cut short by
        # a crash) then finds each recipient settled and repeats nothing.
        ledger.writing = ledger.indexed = True
        try:
            claim = await self.store.queue.claim(envelope.queue_id)
        except Exception as exc:
            # Unknown: deliver as before the index existed; the progress record keeps that from repeating anything.
            log.warning("queue entry unreadable", queue_id=envelope.queue_id, error=f"{type(exc).__name__}: {exc}")
            return True
        if claim.state == states.HELD:
            await self.park(envelope, body, ledger)
            return False
        if claim.state == states.DELETED:
            await self.deleted(envelope, body, ledger, claim.bounce)
            return False
        return True

    async def attempting(self, envelope: Envelope, ledger: Ledger, size: int) -> None:
        """A first attempt that relays: listed `active` while it runs (a relay may take minutes), so the operator
        sees it and may hold it; its end defers or removes the entry like any other."""
        ledger.indexed = True
        await ledger.write(keep=ledger.resumed, mode="active", fields=entry_fields(envelope, size, "", time.time()))

    async def park(self, envelope: Envelope, body: bytes, ledger: Ledger) -> None:
        """A held message: published again to the longest delay queue, not attempted (see the module docstring)."""
        await ledger.load()
        waiting = tuple(r for r in envelope.recipients if not ledger.settled(r))
        if not waiting:
            # Another copy carries them (this one is left over from a crash), or they are done.
            await self.finish(ledger)
            return
        delay = max(self.schedule)
        following = replace(envelope, recipients=waiting, attempt=envelope.attempt + 1)
        await self.publisher.defer(body, following, delay)
        ledger.settle(waiting, progress.deferred(following.attempt))
        last = dict(envelope.last_errors)
        await ledger.write(
            keep=ledger.last_chance,
            mode="defer",
            fields=entry_fields(following, len(body), last.get(waiting[0], ""), time.time() + delay),
        )
        self._trace(envelope.queue_id, "parked", reason="held", delay=delay, attempt=following.attempt)
        log.info("held message parked", queue_id=envelope.queue_id, delay=delay)

    async def deleted(self, envelope: Envelope, body: bytes, ledger: Ledger, bounce: bool) -> None:
        """Deleted with a report: bounce the recipients the deletion took (each `deleted` in the record)."""
        await ledger.load()
        taken = [r for r in envelope.recipients if ledger.known.get(r) == progress.DELETED]
        if bounce and taken:
            failed = [outcome.permanent(r, "5.0.0", DELETED_TEXT) for r in taken]
            await self.bounce(envelope, body, failed, time.time())
        await self.finish(ledger)

    async def deferred(self, ledger: Ledger, following: Envelope, deferred: list[RecipientOutcome], size: int) -> None:
        """After a retry copy was confirmed: the entry describes it, with the progress of this delivery, in one step."""
        delay = retry.delay_for(self.schedule, following.attempt)
        fields = entry_fields(following, size, last_error(deferred[0]), time.time() + delay)
        # Kept without a TTL while resumed, as a flush would: the copy's final write (consumer) sets it.
        await ledger.write(keep=ledger.resumed, mode="defer", fields=fields)

    async def finish(self, ledger: Ledger) -> None:
        """This copy has ended: when every recipient has a final state the message is finished and its entry goes,
        with the last progress, in one step; when a later copy carries some, the entry is deferred again."""
        await ledger.write(keep=ledger.last_chance, mode="finish" if ledger.finished() else "idle")

    async def dead(self, ledger: Ledger, envelope: Envelope, size: int) -> None:
        """Handed back for the last time: the broker dead-letters it; the entry says so until it is requeued."""
        fields = entry_fields(envelope, size, "delivery limit reached (dead-lettered)", 0)
        fields.pop("next_attempt")
        await ledger.write(keep=True, mode="dead", fields=fields)

    def _trace(self, queue_id: str, event: str, **fields: object) -> None:
        self.store.trace.post(queue_id, SERVICE, [(event, dict(fields))])
