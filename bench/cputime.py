"""The CPU-time measure of the in-process micro-benches: the best of several rounds, per call."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_per_call_us(work: Callable[[], object], calls: int, rounds: int) -> float:
    """Microseconds of CPU (process_time: every thread of this process) per call of `work`, best of `rounds`."""
    runs = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            work()
        runs.append((time.process_time() - started) / calls * 1e6)
    return min(runs)
