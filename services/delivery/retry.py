"""The retry schedule: how long a deferred message waits before its next attempt, and when to give up."""

from __future__ import annotations


def delay_for(schedule: tuple[int, ...], attempt: int) -> int:
    """Delay before attempt number `attempt` (1 = the first retry); the last step repeats, as in Postfix."""
    return schedule[min(max(attempt, 1), len(schedule)) - 1]


def expired(first_seen: float, now: float, lifetime: float) -> bool:
    """True once the message has been queued longer than `POSTROOM_MAX_QUEUE_LIFETIME`: bounce instead of retrying."""
    return now - first_seen >= lifetime
