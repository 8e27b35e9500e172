"""What one delivery of a queue message has settled, and what it writes to the store's progress record.

Why each redelivery is harmless (docs/design.md invariants 3 and 4), by the mechanism that makes it so:
- A local recipient stored before the redelivery: the store script finds the message's uid in the mailbox (the
  dedup key, and for ever the uid in `sizes`) and answers DUPLICATE; nothing is stored or counted twice.
- A remote recipient relayed before: the progress record says `relayed` (written right after every successful
  relay, before any later step), so the redelivery skips it. An MTA keeps no such memory for us. The work is not
  cancelled when its channel closes (consumer._on_delivery), so a relay under way completes and is recorded, and
  a redelivery arriving in the same process meanwhile waits for it (consumer._on_message).
- A recipient deferred or bounced before: the record says `deferred:N` or `bounced` whenever that delivery had
  more than one kind of outcome or was itself a redelivery, so the retry or the bounce is not published twice.
  A message whose recipients all had one fate (all stored, all deferred, all bounced) writes nothing on its first
  delivery (the hot path): a lost ack then repeats only idempotent work (DUPLICATE stores), or republishes a
  retry or bounce the same as the first (a retry copy delivers through this record too; a bounce has the same
  queue id, so a local sender stores it once).
- A dead letter requeued any time later (`postroom queue dead requeue`): it reached the dead queue only by being
  handed back, after a nack (which writes the record without a TTL first) or at the delivery limit (whose
  delivery keeps the record without a TTL even when it finishes); the requeued copy is marked and reads it. And a
  local recipient's copy still in the mailbox is a duplicate for ever, whatever the record says.
What remains: a crash between a broker confirm (or a relay's 250) and the record's write repeats that one step, and
a redelivery on another worker can overlap a relay still running here: a duplicate at worst, never a loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from services.store import Progress, QueueIndex
from services.store import progress as states
from shared.envelope import Envelope
from shared.logging import get_logger

log = get_logger(__name__)


class Ledger:
    """The settled recipients of one delivery: `known` from the record (when the message may have been partly
    delivered before), `states` made durable by this delivery; `recipients` are the final ones once planned."""

    def __init__(
        self,
        progress: Progress,
        envelope: Envelope,
        resumed: bool,
        last_chance: bool = False,
        index: QueueIndex | None = None,
    ) -> None:
        self.progress = progress
        self.index = index
        # The message may have a queue entry (queue_control.py): its end removes it.
        self.indexed = False
        self.envelope = envelope
        # A redelivery or a requeued dead letter: its record is kept without a TTL until the message is finished.
        self.resumed = resumed
        # Handed back once more, this delivery would be dead-lettered (x-delivery-limit): its record is kept
        # without a TTL even when it finishes, since an ack lost now leaves it in the dead queue for any time.
        self.last_chance = last_chance
        self.known: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.recipients: list[str] = list(envelope.recipients)
        # Once true, each later durable outcome is written before the next step (see consumer.process).
        self.writing = resumed
        self._unwritten: dict[str, str] = {}

    @property
    def may_be_partly_done(self) -> bool:
        """Only then is the record read: a fresh first delivery (the hot path) costs no round trip."""
        return self.resumed or self.envelope.attempt > 0

    async def load(self) -> None:
        self.known = await self.progress.read(self.envelope.queue_id)

    def settled(self, recipient: str) -> bool:
        state = self.states.get(recipient) or self.known.get(recipient)
        return state is not None and states.settled(state, self.envelope.attempt)

    def settle(self, recipients: Iterable[str], state: str) -> None:
        for recipient in recipients:
            self.states[recipient] = state
            self._unwritten[recipient] = state

    def settle_each(self, found: Mapping[str, str]) -> None:
        for recipient, state in found.items():
            self.settle([recipient], state)

    def finished(self) -> bool:
        """Every recipient has a final outcome (none carried on by a retry copy)."""
        return all(
            (state := self.states.get(r) or self.known.get(r)) is not None and states.final(state)
            for r in self.recipients
        )

    def unsettled(self) -> list[str]:
        return [r for r in self.recipients if not self.settled(r)]

    async def flush(self) -> None:
        """Write the outcomes not written yet, when this delivery writes at all (kept while resumed)."""
        if self.writing and self._unwritten:
            await self.write(keep=self.resumed)

    async def write(self, keep: bool, mode: str = "", fields: Mapping[str, str | int | float] | None = None) -> bool:
        """Write what is unwritten (with no states: set or drop the TTL only); `keep` drops the TTL. With a `mode`
        (defer, dead, finish), the queue entry changes in the same script (services/store/queue_index.py). Never
        raises: a record that cannot be written costs at most a repeat on a redelivery, and the outcome itself is
        durable elsewhere. True when written."""
        try:
            if mode and self.index is not None:
                await self.index.record(self.envelope.queue_id, self._unwritten, keep, mode, fields)
            else:
                await self.progress.record(self.envelope.queue_id, self._unwritten, keep)
        except Exception as exc:
            log.warning(
                "recording delivery progress failed",
                queue_id=self.envelope.queue_id,
                recipients=len(self._unwritten),
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        self._unwritten = {}
        self.writing = True
        return True
