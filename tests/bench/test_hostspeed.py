"""bench.hostspeed's probe and its place in bench.compare's table: each run's row says how fast the host was."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench import compare, hostspeed


@pytest.mark.parametrize("probe", [hostspeed.probe, hostspeed.probe_apart], ids=["here", "in-a-new-interpreter"])
def test_the_probe_gives_the_cpu_of_both_pieces_of_work(probe: Callable[[], dict[str, float]]) -> None:
    speed = probe()
    assert set(speed) == {"heap_ms", "small_ms"}
    assert speed["heap_ms"] > 0 and speed["small_ms"] > 0


def test_the_compare_table_shows_each_runs_probe() -> None:
    ours = compare.Row(1, "e2e", "postroom-e2e", 1000.0, 1.3, host_heap_ms=240.0, host_small_ms=24.0)
    theirs = compare.Row(1, "e2e", "postfix-virtual", 500.0, 2.6, host_heap_ms=250.5, host_small_ms=25.0)
    lines = compare.table([ours, theirs]).splitlines()
    assert lines[0].rstrip().endswith("host probe ms, heap / small |")
    assert lines[2].endswith("| 240.0 / 24.0 |")
    assert lines[3].endswith("| 2.00 | 0.50 | 250.5 / 25.0 |")
