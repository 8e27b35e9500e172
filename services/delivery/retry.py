"""The retry schedule: how long a deferred message waits before its next attempt, and when to give up."""

from __future__ import annotations

from shared.settings import parse_duration


def parse_schedule(text: str) -> tuple[int, ...]:
    """`1m,5m,15m` → (60, 300, 900); whole seconds, because each step is a delay queue named by its TTL."""
    steps = []
    for item in text.split(","):
        if not item.strip():
            continue
        seconds = parse_duration(item)
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"retry step {item.strip()!r} must be a whole number of seconds, at least 1s")
        steps.append(int(seconds))
    if not steps:
        raise ValueError("the retry schedule needs at least one step")
    return tuple(steps)


def delay_for(schedule: tuple[int, ...], attempt: int) -> int:
    """Delay before attempt number `attempt` (1 = the first retry); the last step repeats, as in Postfix."""
    return schedule[min(max(attempt, 1), len(schedule)) - 1]


def expired(first_seen: float, now: float, lifetime: float) -> bool:
    """True once the message has been queued longer than `POSTROOM_MAX_QUEUE_LIFETIME`: bounce instead of retrying."""
    return now - first_seen >= lifetime
