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

# Checks of each library that `auto` measures before it decides; per library its cheapest one counts.
SAMPLES: dict[Checker, int] = {Checker.LIBSODIUM: 2, Checker.ARGON2_CFFI: 2}
# Checks of each library on a thread before that thread's checks are samples. libsodium's checks all map and fault
# their memory alike. argon2-cffi's first two on a thread fault it in: glibc maps the first block of 19 MiB on its
# own and unmaps it when freed (which raises its threshold for mapping), the second grows the thread's arena, and
# only from the third is the memory reused. A pop3 process's first checks at 20 logins at once measured 575-775 ns
# per KiB and pass cold against 298 warm, and libsodium 556, so cold samples chose libsodium every time.
WARM_UP: dict[Checker, int] = {Checker.LIBSODIUM: 0, Checker.ARGON2_CFFI: 2}


class CheckerChoice:
    """The library for the next check; in `auto` mode the first checks are the measurement.

    A sample is the CPU time of the checking thread (user + system, so libsodium's page faults count) divided by
    the check's work, memory KiB x passes, so checks of stored hashes made at another cost compare fairly. Only a
    thread's checks after its `WARM_UP` are samples, and the choice waits for every sample under way.
    """

    def __init__(
        self,
        mode: Checker,
        samples: Mapping[Checker, int] = SAMPLES,
        clock: Callable[[], float] = time.thread_time,
        warm_up: Mapping[Checker, int] = WARM_UP,
    ) -> None:
        self._clock = clock
        self._samples = {name: max(1, samples.get(name, 1)) for name in LIBRARIES}
        self._warm_up = {name: max(0, warm_up.get(name, 0)) for name in LIBRARIES}
        self.chosen: Checker | None = None if mode is Checker.AUTO else mode
        self._best: dict[Checker, float] = {}
        self._taken: dict[Checker, int] = dict.fromkeys(LIBRARIES, 0)  # samples started
        self._recorded: dict[Checker, int] = dict.fromkeys(LIBRARIES, 0)  # samples finished
        self._thread = threading.local()  # .runs: this thread's checks by library, while measuring
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
        runs: dict[Checker, int] = self._thread.__dict__.setdefault("runs", dict.fromkeys(LIBRARIES, 0))
        with self._lock:
            # The library furthest from its samples; a thread's warm-up checks are not samples, so until that
            # thread is warm the same library comes again.
            library = min(LIBRARIES, key=lambda name: self._taken[name] / self._samples[name])
            sample = runs[library] >= self._warm_up[library]
            if sample:
                self._taken[library] += 1
        runs[library] += 1
        PASSWORD_CHECKS.labels(library).inc()
        began = self._clock()
        result = checks[library]()
        if sample:
            self._record(library, (self._clock() - began) / work)
        return result

    def _record(self, library: Checker, cost: float) -> None:
        with self._lock:
            best = self._best.get(library)
            self._best[library] = cost if best is None else min(best, cost)
            self._recorded[library] += 1
            if self.chosen is not None or any(self._recorded[name] < self._samples[name] for name in LIBRARIES):
                return  # samples still to take, or still running on another thread
            self.chosen = min(LIBRARIES, key=lambda name: self._best[name])
            figures = {str(name): round(self._best[name] * 1e9, 1) for name in LIBRARIES}
        log.info("argon2 checker chosen", checker=str(self.chosen), ns_per_kib_pass=figures)
