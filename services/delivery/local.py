"""Local delivery: the idempotent, atomic store into a mailbox, its result turned into an outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.delivery import outcome
from services.delivery.outcome import Outcome
from services.delivery.routing import Target
from services.store import Mailboxes, StoreOutcome

# Failures that mean "the store is not reachable right now", never "this message is bad": retry later.
STORE_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    ConnectionError,
    TimeoutError,
)


async def deliver_local(
    mailboxes: Mailboxes, targets: Sequence[Target], queue_id: str, message: bytes
) -> list[Outcome]:
    """Store once per queue id and mailbox, all mailboxes in one round trip; DUPLICATE (a redelivered message) is as
    good as STORED. An error that is not an outage raises: the consumer requeues the message."""
    try:
        results = await mailboxes.deliver_many([t.address for t in targets], queue_id, message)
    except STORE_UNAVAILABLE as exc:
        return [_unavailable(t, exc) for t in targets]
    outcomes = []
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, STORE_UNAVAILABLE):
            outcomes.append(_unavailable(target, result))
        elif isinstance(result, Exception):
            raise result
        else:
            outcomes.append(replace(_outcome(target, result), original=target.original))
    return outcomes


def _unavailable(target: Target, exc: Exception) -> Outcome:
    # The store may or may not have happened; the dedup key makes the retry safe either way.
    found = outcome.temporary(target.address, "4.3.0", f"mail store unavailable: {type(exc).__name__}")
    return replace(found, original=target.original)


def _outcome(target: Target, result: StoreOutcome) -> Outcome:
    if result in (StoreOutcome.STORED, StoreOutcome.DUPLICATE):
        return outcome.delivered(target.address, result.value)
    if result is StoreOutcome.OVER_QUOTA:
        # RFC 3463 X.2.2: mailbox full is transient here; the queue retries until its lifetime, then bounces.
        return outcome.temporary(target.address, "4.2.2", "mailbox full")
    return outcome.permanent(target.address, "5.1.1", "no such mailbox")
