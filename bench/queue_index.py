"""The queue index at scale: N deferred entries, then the time to list them (`postroom queue list`), to count them
per state (the store's `postroom_queue_messages` refresh) and to hold and release one, against the shared Redis.

    .venv/bin/python -m bench.queue_index --entries 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from services.store import Store
from services.store import queue_index as states
from services.store.queue_index import Filter, count_states
from shared.queue_id import new_queue_id


async def main(entries: int, redis_url: str) -> dict[str, float]:
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    store = Store.connect(redis_url, namespace)
    try:
        started = time.perf_counter()
        ids = [new_queue_id() for _ in range(entries)]
        for queue_id in ids:
            recipient = f"user{queue_id[-4:]}@remote{queue_id[-1]}.example"
            fields: dict[str, str | int | float] = {
                "queue_id": queue_id,
                "arrival": time.time(),
                "sender": "sender@example.com",
                "recipients": json.dumps([recipient]),
                "last_error": "451 4.7.1 Greylisted, please try again later (host mx.remote.example)",
                "next_attempt": time.time() + 300,
                "size": 4096,
                "attempts": 1,
            }
            await store.queue.record(queue_id, {recipient: "deferred:1"}, False, "defer", fields)
        written = time.perf_counter() - started
        started = time.perf_counter()
        listed = await store.queue.entries()
        listing = time.perf_counter() - started
        started = time.perf_counter()
        filtered = await store.queue.entries(Filter(domain="remote7.example"))
        filtering = time.perf_counter() - started
        started = time.perf_counter()
        counts = await count_states(store.redis, store.keys)
        counting = time.perf_counter() - started
        started = time.perf_counter()
        await store.queue.set_state(ids[0], states.HELD, (states.DEFERRED,))
        await store.queue.set_state(ids[0], states.DEFERRED, (states.HELD,))
        steering = time.perf_counter() - started
        assert len(listed) == entries and counts[states.DEFERRED] == entries
        return {
            "entries": entries,
            "write_per_entry_ms": 1000 * written / entries,
            "list_s": listing,
            "list_domain_s": filtering,
            "matched": len(filtered),
            "count_states_s": counting,
            "hold_release_ms": 1000 * steering,
        }
    finally:
        keys = [k async for k in store.redis.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await store.redis.delete(*keys[start : start + 500])
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.entries, args.redis_url)), indent=2))
