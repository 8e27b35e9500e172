"""bench.run smtp with two delivery processes at a tiny size: both take work from the one queue, and the bench's
own check (answered 250 = in the mailbox = distinct queue ids) holds; needs smtp-source (Makefile TEST_TOOLS)."""

from __future__ import annotations

import shutil

import pytest

from bench import run

pytestmark = [
    pytest.mark.skipif(not shutil.which("smtp-source"), reason="smtp-source (Debian's postfix) not installed"),
    pytest.mark.timeout(300),
]


def test_two_delivery_processes_share_the_queue_with_nothing_lost_or_duplicated() -> None:
    argv = ["--brokers", "shared", "smtp", "--messages", "300", "--sessions", "6", "--delivery-replicas", "2"]
    result = run.run_smtp(run.parse(argv))
    check = result["check"]
    assert check["accepted_250"] == check["in_mailbox"] == check["distinct_queue_ids"] == 300
    by_replica = check["delivered_by"]
    assert set(by_replica) == {"delivery", "delivery-2"}
    assert sum(by_replica.values()) == 300
    assert all(count > 0 for count in by_replica.values())
    assert {"delivery", "delivery-2"} <= set(result["cpu_ms_per_msg"])
