"""The POP3 load generator of bench.run pop3 and bench.reference dovecot: several client processes, each with its
own event loop (uvloop) and a share of the sessions, so that the client is not what limits the rate.

Each session logs in with USER/PASS, pipelines RETR 1..count in batches, never deletes (keep mode) and QUITs. A
response is read whole with one buffered search for its terminating CRLF.CRLF rather than line by line, and every
message is checked to come back whole (its octets, less the terminator, equal to the message's size).

Postal's `rabid` (Debian's postal package) is not used: it picks accounts at random, sends one command at a time
(no pipelining), runs until stopped and reads no sizes, so it can neither run a fixed load nor check it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

import uvloop

PASSWORD = "bench-password"


async def pop3_download(port: int, user: str, count: int, batch: int, size: int, password: str = PASSWORD) -> int:
    """Log in, pipeline RETR 1..count in batches of `batch`, return the octets read; keep mode (no DELE).

    Raises when a message is not `size` octets long (as sent on the wire, before the terminating dot line): no
    message body here has a line starting with a dot, so no dot-unstuffing applies.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=max(2**20, 4 * size))
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"+OK"):
            raise RuntimeError(f"no greeting: {greeting!r}")
        writer.write(f"USER {user}\r\nPASS {password}\r\n".encode())
        for _ in range(2):
            line = await reader.readline()
            if not line.startswith(b"+OK"):
                raise RuntimeError(f"login failed for {user}: {line!r}")
        total = 0
        for first in range(1, count + 1, batch):
            numbers = range(first, min(count, first + batch - 1) + 1)
            writer.write(b"".join(b"RETR %d\r\n" % n for n in numbers))
            for n in numbers:
                status = await reader.readline()
                if not status.startswith(b"+OK"):
                    raise RuntimeError(f"RETR {n} failed for {user}: {status!r}")
                # The message's lines and the terminating ".\r\n" after the last line's CRLF.
                octets = len(await reader.readuntil(b"\r\n.\r\n")) - 3
                if octets != size:
                    raise RuntimeError(f"message {n} of {user} came back with {octets} octets, not {size}")
                total += octets
        writer.write(b"QUIT\r\n")
        await reader.readline()
        return total
    finally:
        writer.close()


@dataclass(frozen=True)
class Download:
    """What one load run measured: wall time from the first session's start to the last one's end, the octets read,
    and the CPU time the client processes used (user + system)."""

    clients: int
    seconds: float
    octets: int
    client_cpu_seconds: float

    def report(self, messages: int) -> dict[str, Any]:
        return {
            "load_clients": self.clients,
            "client_cpu_ms_per_msg": round(self.client_cpu_seconds * 1000 / messages, 3),
        }


def _client(
    port: int, users: list[str], count: int, batch: int, size: int, password: str, start: Barrier, out: Connection
) -> None:
    """One client process: wait for the others, download its users' mailboxes concurrently, send back its figures."""

    async def run() -> int:
        return sum(await asyncio.gather(*(pop3_download(port, u, count, batch, size, password) for u in users)))

    try:
        start.wait(60)
        cpu, began = time.process_time(), time.monotonic()
        octets = uvloop.run(run())
        out.send((began, time.monotonic(), octets, time.process_time() - cpu, None))
    except Exception as error:  # reported to the parent, which raises it
        out.send((0.0, 0.0, 0, 0.0, f"{type(error).__name__}: {error}"))


def download(
    port: int, users: list[str], count: int, batch: int, size: int, clients: int, password: str = PASSWORD
) -> Download:
    """Download `count` messages of `size` octets from each of `users`, spread over `clients` processes."""
    context = multiprocessing.get_context("fork")
    shares = [share for share in (users[i::clients] for i in range(clients)) if share]
    start = context.Barrier(len(shares))
    pipes, procs = [], []
    for share in shares:
        receiver, sender = context.Pipe(duplex=False)
        proc = context.Process(target=_client, args=(port, share, count, batch, size, password, start, sender))
        proc.start()
        pipes.append(receiver)
        procs.append(proc)
    results = []
    try:
        for receiver in pipes:
            if not receiver.poll(3600):
                raise RuntimeError("a POP3 load client sent nothing within an hour")
            results.append(receiver.recv())
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [error for *_, error in results if error]
    if errors:
        raise RuntimeError(f"POP3 load failed: {errors[0]}")
    return Download(
        clients=len(shares),
        seconds=max(r[1] for r in results) - min(r[0] for r in results),
        octets=sum(r[2] for r in results),
        client_cpu_seconds=sum(r[3] for r in results),
    )
