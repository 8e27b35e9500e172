"""Authentication failure delays that grow with recent failures per client IP and per account."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# Bounded memory whatever an attacker does: the least recently failed keys are forgotten first.
MAX_TRACKED = 20000


class FailureDelays:
    """Doubling delay per recent failure (base, 2·base, 4·base … up to `maximum`), keyed by IP and by account.

    The counters live in this process: with several POP3 replicas an attacker is slowed per replica, which is
    still the point (make guessing slow), without a Redis round trip on every failure.
    """

    def __init__(
        self,
        base: float,
        maximum: float,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.maximum = maximum
        self.forget_after = forget_after
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _count(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        count, last = entry
        if self.clock() - last > self.forget_after:
            del self._failures[key]
            return 0
        return count

    def _bump(self, key: str) -> None:
        count = self._count(key) + 1
        self._failures[key] = (count, self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def record_failure(self, ip: str, account: str) -> float:
        """Count one failure and return how long to wait before answering it."""
        self._bump(f"ip:{ip}")
        self._bump(f"account:{account.lower()}")
        return self.delay(ip, account)

    def record_success(self, account: str) -> None:
        # The IP's count stays: one valid account must not reset the penalty for guessing at others.
        self._failures.pop(f"account:{account.lower()}", None)

    def delay(self, ip: str, account: str) -> float:
        failures = max(self._count(f"ip:{ip}"), self._count(f"account:{account.lower()}"))
        if failures == 0 or self.base <= 0:
            return 0.0
        return float(min(self.base * 2 ** min(failures - 1, 32), self.maximum))
