"""CPU cost of packing the Redis commands one locally stored message sends, redis-py's packer against hiredis's.

The commands are those docs/performance.md lists for a 1 KiB message end to end: the ingress's RCPT lookup
(SISMEMBER, EXISTS, HMGET) and trace script, the delivery's lookup again, its store script with the body, its
trace script, and the events counter. Each is packed by redis-py's asyncio connection (Python) and by
shared.redis_packing's (hiredis); the bytes are checked equal first.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import Connection

from bench.cputime import best_per_call_us
from shared.redis_packing import HiredisConnection

ROUNDS = 5
CALLS = 20_000
SHA = "0123456789abcdef0123456789abcdef01234567"
MAILBOX = "ns:{sink@bench.test}"
LOOKUP: list[tuple[Any, ...]] = [
    ("SISMEMBER", "ns:domains", "bench.test"),
    ("EXISTS", f"{MAILBOX}:account"),
    ("HMGET", "ns:aliases", "sink@bench.test", "@bench.test"),
]
TRACE = ("EVALSHA", SHA, 1, "ns:trace:{20261204T0000-abcdef}", 604800, 1000, '{"event":"stored","at":1.5}')
MESSAGE: list[tuple[Any, ...]] = [
    *LOOKUP,
    TRACE,
    *LOOKUP,
    (
        "EVALSHA",
        SHA,
        6,
        *(f"{MAILBOX}:{part}" for part in ("msg:x", "index", "sizes", "dedup:x", "seq", "wire")),
        b"x" * 1024,
        1024,
        "20261204T0000-abcdef",
        1701234567.125,
        0,
    ),
    TRACE,
    ("INCRBY", "ns:stats:trace-events", 2),
]


def main() -> None:
    python, hiredis = Connection(), HiredisConnection()
    for command in MESSAGE:
        assert b"".join(hiredis.pack_command(*command)) == b"".join(python.pack_command(*command)), command
    packers: list[tuple[str, Connection]] = [("redis-py (Python)", python), ("hiredis", hiredis)]
    for name, connection in packers:

        def pack(packer: Connection = connection) -> list[list[bytes]]:
            return [packer.pack_command(*command) for command in MESSAGE]

        cost = best_per_call_us(pack, CALLS, ROUNDS)
        print(f"{name}: {cost:.1f} µs CPU to pack one message's {len(MESSAGE)} commands")


if __name__ == "__main__":
    main()
