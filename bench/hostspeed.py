"""How fast the host runs Python this minute: two fixed pieces of work timed in CPU, one with a large heap.

Hosts of this machine class change speed within minutes, and not evenly: on 2026-12-04 a probe like `heap` took
15% more CPU than a quarter of an hour before while `small` took the same, and Postroom's end-to-end CPU per
message rose by a fifth in that window while Postfix's did not. Work over a large heap feels whatever slows memory
(another tenant's cache traffic) and a small loop does not, so the two side by side may tell a slow memory system
from a slow core. bench.compare probes before every run; `python -m bench.hostspeed` prints one probe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

ROUNDS = 2


def heap_work() -> int:
    """About 40 MiB of dicts, strings and lists built and walked: a heap far larger than the caches."""
    table = {str(n): (n, n * 2, {"n": n}) for n in range(200_000)}
    return sum(entry[2]["n"] for entry in table.values())


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int) -> None:
        self.value += amount


def small_work() -> int:
    """Method calls on one small object: everything stays in the caches."""
    counter = _Counter()
    for n in range(400_000):
        counter.add(n & 7)
    return counter.value


def cpu_ms(work: Callable[[], int], rounds: int = ROUNDS) -> float:
    """CPU milliseconds of one call of `work`, the best of `rounds` (process_time: unaffected by waiting for a
    core, which the bench's own load would add)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def probe() -> dict[str, float]:
    return {"heap_ms": cpu_ms(heap_work), "small_ms": cpu_ms(small_work)}


def probe_apart() -> dict[str, float]:
    """`probe` in a new interpreter: the caller's own heap (a bench that has imported the services) would make
    the cyclic collector's passes during the heap work longer, and differently from caller to caller."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.hostspeed"], capture_output=True, text=True, timeout=120, check=True
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


if __name__ == "__main__":
    print(json.dumps(probe()))
