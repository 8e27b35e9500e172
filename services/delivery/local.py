"""Local delivery: the idempotent, atomic store into a mailbox, its result turned into an outcome."""

from __future__ import annotations

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


async def deliver_local(mailboxes: Mailboxes, target: Target, queue_id: str, message: bytes) -> Outcome:
    """Store once per queue id; a redelivered message answers DUPLICATE, which is as good as STORED."""
    try:
        result = await mailboxes.deliver(target.address, queue_id, message)
    except STORE_UNAVAILABLE as exc:
        # The store may or may not have happened; the dedup key makes the retry safe either way.
        found = outcome.temporary(target.address, "4.3.0", f"mail store unavailable: {type(exc).__name__}")
        return replace(found, original=target.original)
    if result in (StoreOutcome.STORED, StoreOutcome.DUPLICATE):
        found = outcome.delivered(target.address, result.value)
    elif result is StoreOutcome.OVER_QUOTA:
        # RFC 3463 X.2.2: mailbox full is transient here; the queue retries until its lifetime, then bounces.
        found = outcome.temporary(target.address, "4.2.2", "mailbox full")
    else:
        found = outcome.permanent(target.address, "5.1.1", "no such mailbox")
    return replace(found, original=target.original)
