"""Per-message delivery progress: which recipients of a queue message already have a durable outcome.

The delivery records an outcome here once it is durable (a mailbox store, a relay answered 2xx, a bounce or retry
the broker confirmed) whenever a later delivery of the same queue message could otherwise repeat it: a redelivery
after a lost ack, a requeued dead letter. Remote delivery has no other memory (an MTA does not deduplicate), so
this record is what keeps a relayed recipient from being relayed again. One hash per queue id, hash-tagged by it
(keys.py), written by one script (lua.RECORD_PROGRESS) that never moves a recipient backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.store import lua
from services.store.keys import Keys
from services.store.mailbox import DEFAULT_DEDUP_TTL
from services.store.part import Part, as_text

STORED = "stored"
DUPLICATE = "duplicate"
RELAYED = "relayed"
BOUNCED = "bounced"
DELETED = "deleted"  # by the operator (`postroom queue delete`)
_DEFERRED = "deferred:"


def deferred(attempt: int) -> str:
    """The state of a recipient carried on by the retry copy of attempt number `attempt` (confirmed)."""
    return f"{_DEFERRED}{attempt}"


def final(state: str) -> bool:
    """True for an outcome no later delivery changes (not a deferral)."""
    return not state.startswith(_DEFERRED)


def settled(state: str, attempt: int) -> bool:
    """True when a delivery of attempt number `attempt` must leave a recipient in `state` alone: its outcome is
    final, or a retry copy of a later attempt than this one already carries it."""
    if not state.startswith(_DEFERRED):
        return True
    try:
        return int(state.removeprefix(_DEFERRED)) > attempt
    except ValueError:
        return False


class Progress(Part):
    """Reads and records the progress of queue messages; `ttl` is how long a finished message's record lasts."""

    def __init__(self, redis: Any, keys: Keys, ttl: int = DEFAULT_DEDUP_TTL) -> None:
        super().__init__(redis, keys)
        self.ttl = ttl
        self._record = redis.register_script(lua.RECORD_PROGRESS)

    async def read(self, queue_id: str) -> dict[str, str]:
        """Recipient → state, as recorded so far (empty when nothing was)."""
        found = await self.redis.hgetall(self.keys.progress(queue_id))
        return {as_text(k): as_text(v) for k, v in found.items()}

    async def record(self, queue_id: str, states: Mapping[str, str], keep: bool = False) -> None:
        """Record `states` (recipient → state) in one script call. `keep`: drop any TTL, because the message may
        still be redelivered, even from the dead-letter queue, at any later time; otherwise the record expires
        `ttl` seconds after this write. With no states, only the TTL is set (or dropped)."""
        args: list[str | int] = [0 if keep else self.ttl]
        for recipient, state in states.items():
            args += [recipient, state]
        await self._record(keys=[self.keys.progress(queue_id)], args=args)
