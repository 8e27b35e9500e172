"""Which Redis errors are an outage (retry later), by reason label, and which are not."""

from __future__ import annotations

from typing import Any

import redis
from redis._parsers.base import BaseParser

from services.store.outage import outage


def test_outage_reasons() -> None:
    """What Redis answers in each state, as redis-py raises it, and errors that are not outages."""
    cases = {
        "READONLY You can't write against a read only replica. script: x": "readonly",
        "OOM command not allowed when used memory > 'maxmemory'. script: x": "oom",
        "NOREPLICAS Not enough good replicas to write.": "noreplicas",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": "masterdown",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist": "misconf",
        "LOADING Redis is loading the dataset in memory": "loading",
        "CLUSTERDOWN The cluster is down": "cluster",
        "TRYAGAIN Multiple keys request during rehashing of slot": "cluster",
        "WRONGTYPE Operation against a key holding the wrong kind of value": None,
        "ERR Error running script": None,
    }
    found: dict[str, Any] = {reply: outage(BaseParser.parse_error(reply)) for reply in cases}  # type: ignore[no-untyped-call]
    assert found == cases
    assert outage(redis.exceptions.ConnectionError("refused")) == "connection"
    assert outage(redis.exceptions.TimeoutError("slow")) == "timeout"
    assert outage(ValueError("bug")) is None
