"""Which argon2 library checks a password: libsodium or argon2-cffi, the one that costs this host less CPU.

libsodium (PyNaCl) picks SSE or AVX2 code at run time but maps its argon2 memory afresh for every check, so the
kernel zeroes and faults in 19 MiB each time (4,864 minor faults at the default cost). argon2-cffi reuses its
heap memory, and its speed depends on how it was built: PyPI's wheel is SSE2, about libsodium's cost in all;
built on the host with AVX2 (`make venv` does so where the CPU has it) it checks in about three quarters of
libsodium's CPU (bench/password_cost.py). Which one wins is a property of the host and the installed build, so
`auto` measures it: the first checks alternate between the two and every later one goes to the cheaper.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum

from prometheus_client import Counter

from shared.logging import get_logger
from shared.series import create_series

log = get_logger(__name__)


class Checker(StrEnum):
    """`POSTROOM_ARGON2_CHECKER`'s values."""

    AUTO = "auto"
    LIBSODIUM = "libsodium"
    ARGON2_CFFI = "argon2-cffi"


LIBRARIES = (Checker.LIBSODIUM, Checker.ARGON2_CFFI)
PASSWORD_CHECKS = Counter(
    "postroom_password_checks_total", "argon2 password checks run, by the library that ran them", ["checker"]
)
create_series(PASSWORD_CHECKS, tuple(str(library) for library in LIBRARIES))

# Checks of each library before `auto` decides; per library its cheapest one counts. argon2-cffi's first check on
# each argon2 pool thread faults its memory in, so it needs warm samples beside those; libsodium's checks all fault
# alike, so two of them (the costlier ones while measuring, where the host build wins) say as much.
SAMPLES: dict[Checker, int] = {Checker.LIBSODIUM: 2, Checker.ARGON2_CFFI: 4}


class CheckerChoice:
    """The library for the next check; in `auto` mode the first checks are the measurement.

    A sample is the CPU time of the checking thread (user + system, so libsodium's page faults count) divided by
    the check's work, memory KiB x passes, so checks of stored hashes made at another cost compare fairly.
    """

    def __init__(
        self,
        mode: Checker,
        samples: Mapping[Checker, int] = SAMPLES,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._clock = clock
        self._samples = {name: max(1, samples.get(name, 1)) for name in LIBRARIES}
        self.chosen: Checker | None = None if mode is Checker.AUTO else mode
        self._best: dict[Checker, float] = {}
        self._taken: dict[Checker, int] = dict.fromkeys(LIBRARIES, 0)
        # The argon2 pool's threads check at once; the tallies are small and read-modify-write.
        self._lock = threading.Lock()

    def run(self, work: int, checks: dict[Checker, Callable[[], bool]]) -> bool:
        """Run one check through the chosen library, or, while measuring, the one furthest from its samples."""
        chosen = self.chosen
        if chosen is not None or work <= 0:
            # A string that names no cost (malformed) is no sample: it fails fast in either library.
            library = chosen or LIBRARIES[0]
            PASSWORD_CHECKS.labels(library).inc()
            return checks[library]()
        with self._lock:
            library = min(LIBRARIES, key=lambda name: self._taken[name] / self._samples[name])
            self._taken[library] += 1
        PASSWORD_CHECKS.labels(library).inc()
        began = self._clock()
        result = checks[library]()
        self._record(library, (self._clock() - began) / work)
        return result

    def _record(self, library: Checker, cost: float) -> None:
        with self._lock:
            best = self._best.get(library)
            self._best[library] = cost if best is None else min(best, cost)
            if self.chosen is not None or any(self._taken[name] < self._samples[name] for name in LIBRARIES):
                return
            if len(self._best) < len(LIBRARIES):
                return  # a sample still running on another thread
            self.chosen = min(LIBRARIES, key=lambda name: self._best[name])
            figures = {str(name): round(self._best[name] * 1e9, 1) for name in LIBRARIES}
        log.info("argon2 checker chosen", checker=str(self.chosen), ns_per_kib_pass=figures)
