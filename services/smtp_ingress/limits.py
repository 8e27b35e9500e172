"""Connection caps (global and per client IP) and the growing delay after failed AUTH attempts."""

from __future__ import annotations

import time
from collections import OrderedDict


class AuthThrottle:
    """Failed AUTH attempts per client IP and per account; the delay doubles with each failure up to a cap.

    Both keys count, so a password-guessing run is slowed whether it spreads over accounts or over addresses.
    Failures are forgotten after `window` seconds; the tables are bounded (oldest entries dropped).
    """

    def __init__(self, base: float, cap: float, window: float = 900.0, max_entries: int = 10000) -> None:
        self.base = base
        self.cap = cap
        self.window = window
        self.max_entries = max_entries
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _count(self, key: str, now: float) -> int:
        entry = self._failures.get(key)
        if entry is None or now - entry[1] > self.window:
            return 0
        return entry[0]

    def delay(self, ip: str, account: str, now: float | None = None) -> float:
        """The delay to impose on a failure now (before this failure is recorded)."""
        now = time.monotonic() if now is None else now
        failures = max(self._count(f"ip:{ip}", now), self._count(f"account:{account.lower()}", now))
        return float(min(self.cap, self.base * 2.0**failures))

    def record_failure(self, ip: str, account: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in (f"ip:{ip}", f"account:{account.lower()}"):
            count = self._count(key, now) + 1
            self._failures[key] = (count, now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    def record_success(self, account: str) -> None:
        self._failures.pop(f"account:{account.lower()}", None)
