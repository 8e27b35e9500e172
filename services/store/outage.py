"""Which Redis errors mean "the store cannot take this right now" (retry later), by a bounded reason label."""

from __future__ import annotations

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Every label `outage` returns, for metrics that create their series up front.
REASONS = (
    "connection",
    "timeout",
    "loading",
    "readonly",
    "oom",
    "noreplicas",
    "masterdown",
    "misconf",
    "cluster",
)

# Error codes (the first word of a Redis error reply) of a server that is up but refuses writes or commands for a
# while: a replica during a failover (READONLY, MASTERDOWN), maxmemory with noeviction (OOM), min-replicas-to-write
# unmet (NOREPLICAS), a failed background save with stop-writes-on-bgsave-error (MISCONF), loading its data
# (LOADING), a cluster resharding or without quorum (CLUSTERDOWN, TRYAGAIN). None of them says the message is bad.
_CODES = {
    "READONLY": "readonly",
    "OOM": "oom",
    "NOREPLICAS": "noreplicas",
    "MASTERDOWN": "masterdown",
    "MISCONF": "misconf",
    "LOADING": "loading",
    "CLUSTERDOWN": "cluster",
    "TRYAGAIN": "cluster",
}


def outage(exc: BaseException) -> str | None:
    """The reason label when `exc` means the store is unreachable or refusing for now; None for anything else
    (a bug, a wrong type: retrying the same call would fail the same way)."""
    if isinstance(exc, ReadOnlyError):
        return "readonly"
    if isinstance(exc, MasterDownError):
        return "masterdown"
    if isinstance(exc, BusyLoadingError):  # a ConnectionError in redis-py: checked first
        return "loading"
    if isinstance(exc, RedisConnectionError | ConnectionError):
        return "connection"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, OutOfMemoryError):
        return "oom"
    if isinstance(exc, ClusterDownError | TryAgainError):
        return "cluster"
    if isinstance(exc, ResponseError):
        # redis-py strips the code from the text of the errors it maps to a class (`status_code` keeps it) and
        # leaves it at the front of the others (NOREPLICAS, MISCONF, ...).
        code = getattr(exc, "status_code", None) or (str(exc).split(maxsplit=1) or [""])[0]
        return _CODES.get(str(code).upper())
    return None
