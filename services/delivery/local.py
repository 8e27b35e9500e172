"""Local delivery: the idempotent, atomic store into a mailbox, its result turned into an outcome."""

from __future__ import annotations

from collections.abc import Sequence

from services.delivery import metrics, outcome
from services.delivery.outcome import RecipientOutcome
from services.delivery.replytext import readable
from services.delivery.routing import Target
from services.store import Mailboxes, StoreOutcome
from services.store.outage import outage
from shared.logging import get_logger

log = get_logger(__name__)


def return_path(sender: str) -> bytes:
    """The `Return-Path:` line final delivery puts at the top of the message (RFC 5321 §4.4): the envelope sender,
    `<>` for the null sender. The sender is one line of text whatever the envelope holds (no header injection)."""
    return f"Return-Path: <{readable(sender).replace(' ', '')}>\r\n".encode()


async def deliver_local(
    mailboxes: Mailboxes, targets: Sequence[Target], queue_id: str, message: bytes, sender: str
) -> list[RecipientOutcome]:
    """Store once per queue id and mailbox, all mailboxes in one round trip; DUPLICATE (a redelivered message) is as
    good as STORED. A store that is unreachable or refuses writes (a replica mid-failover, maxmemory, too few
    replicas, loading) defers the recipient; any other error raises (the consumer defers it as an internal error).
    """
    try:
        results = await mailboxes.deliver_many([t.address for t in targets], queue_id, message, return_path(sender))
    except Exception as exc:
        reason = outage(exc)
        if reason is None:
            raise
        return unavailable(targets, queue_id, exc, reason, "mail store")
    outcomes = []
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, Exception):
            reason = outage(result)
            if reason is None:
                raise result
            outcomes += unavailable([target], queue_id, result, reason, "mail store")
        else:
            outcomes.append(_outcome(target, result))
    return outcomes


def unavailable(
    targets: Sequence[Target], queue_id: str, exc: Exception, reason: str, what: str
) -> list[RecipientOutcome]:
    """Deferred (4.3.0) for a store outage, with the reason in the diagnostic, counted and logged. The store may or
    may not have happened; the dedup key makes the retry safe either way."""
    error = readable(str(exc))
    text = f"{what} unavailable: {reason} ({type(exc).__name__}{': ' + error if error else ''})"
    metrics.store_errors(reason).inc(len(targets))
    log.warning("store outage; deferred", queue_id=queue_id, what=what, reason=reason, error=error, n=len(targets))
    return [outcome.temporary(t.address, "4.3.0", text, original=t.original) for t in targets]


def _outcome(target: Target, result: StoreOutcome) -> RecipientOutcome:
    address, original = target.address, target.original
    if result in (StoreOutcome.STORED, StoreOutcome.DUPLICATE):
        return outcome.delivered(address, result.value, original=original)
    if result is StoreOutcome.OVER_QUOTA:
        # RFC 3463 X.2.2: mailbox full is transient here; the queue retries until its lifetime, then bounces.
        return outcome.temporary(address, "4.2.2", "mailbox full", original=original)
    return outcome.permanent(address, "5.1.1", "no such mailbox", original=original)
