"""The bodies of large deliveries waiting for a worker: in memory within a byte budget, in a spool file beyond it."""

from __future__ import annotations

from typing import Protocol

from services.delivery import metrics
from shared.logging import get_logger
from shared.spool import MessageSpool

log = get_logger(__name__)


class Carrier(Protocol):
    """What the waiting room uses of a delivery: its body, which it may take away and give back."""

    body: bytes
    message_id: str | None


class Waiting:
    """One large delivery's body while it waits: counted in memory, or in `spool` (its `body` emptied)."""

    __slots__ = ("size", "spool")

    def __init__(self, size: int, spool: MessageSpool | None) -> None:
        self.size = size
        self.spool = spool


class WaitingRoom:
    """Keeps the bytes of waiting bodies in memory at or under `budget`; a body that does not fit goes to a file.

    Spilling writes on the event loop on purpose: while it writes, aiormq reads no more frames from the broker,
    so a burst of big deliveries is slowed to the disk's pace instead of piling up in memory.
    """

    def __init__(self, budget: int, directory: str | None) -> None:
        self.budget = budget
        self.directory = directory
        self.held = 0  # bytes of waiting bodies in memory
        self.peak = 0  # the most `held` has been (tests check it against the budget)
        self.spooled = 0  # bodies in spool files now

    def hold(self, message: Carrier) -> Waiting:
        """Count the body of `message` in memory if it fits the budget; otherwise write it to an unlinked file and
        drop the message's reference to it (the only one left: the caller's frame must hold none)."""
        size = len(message.body)
        if self.held + size <= self.budget:
            return self._in_memory(size)
        spool = MessageSpool(self.directory, memory_limit=0)
        try:
            spool.write(message.body)
        except OSError as exc:
            # A full or broken spool directory must not lose mail: keep this one in memory, over the budget.
            spool.close()
            log.error(
                "spilling a waiting message failed; kept in memory", message_id=message.message_id, error=str(exc)
            )
            return self._in_memory(size)
        message.body = b""
        self.spooled += 1
        metrics.SPILLS.inc()
        metrics.SPOOLED.set(self.spooled)
        return Waiting(size, spool)

    def take(self, waiting: Waiting, message: Carrier) -> None:
        """The message got a worker: give it back its body (read from the file if it was spilled)."""
        if waiting.spool is None:
            self._release(waiting.size)
            waiting.size = 0
            return
        spool, waiting.spool, waiting.size = waiting.spool, None, 0
        try:
            message.body = spool.read()
        finally:
            self._close(spool)

    def discard(self, waiting: Waiting) -> None:
        """The message ends without a worker (cancelled): forget its body. Idempotent, and harmless after take."""
        if waiting.spool is not None:
            spool, waiting.spool = waiting.spool, None
            self._close(spool)
        elif waiting.size:
            self._release(waiting.size)
            waiting.size = 0

    def _in_memory(self, size: int) -> Waiting:
        self.held += size
        self.peak = max(self.peak, self.held)
        metrics.WAITING_BODY_BYTES.set(self.held)
        return Waiting(size, None)

    def _release(self, size: int) -> None:
        self.held -= size
        metrics.WAITING_BODY_BYTES.set(self.held)

    def _close(self, spool: MessageSpool) -> None:
        spool.close()
        self.spooled -= 1
        metrics.SPOOLED.set(self.spooled)
