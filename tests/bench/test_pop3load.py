"""The benchmarks' POP3 load generator (bench/pop3load.py) against a minimal POP3 server on loopback: it reads
every message of every mailbox over several client processes, and a message that comes back short is an error,
not a silently lower rate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from bench.pop3load import PASSWORD, download
from bench.run import pop3_body

BODY = pop3_body(2048)


class TinyPOP3:
    """Serves `count` copies of BODY to any user with PASSWORD (RETR of message `short` one octet short)."""

    def __init__(self, count: int, short: int | None = None) -> None:
        self.count = count
        self.short = short
        self.port = 0
        self.sessions = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        writer.write(b"+OK ready\r\n")
        while line := await reader.readline():
            command, _, argument = line.decode().strip().partition(" ")
            if command == "USER":
                writer.write(b"+OK\r\n")
            elif command == "PASS":
                writer.write(b"+OK\r\n" if argument == PASSWORD else b"-ERR no\r\n")
            elif command == "RETR":
                body = BODY[:-3] + b"\r\n" if int(argument) == self.short else BODY
                writer.write(b"+OK\r\n" + body + b".\r\n")
            elif command == "QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                break
            await writer.drain()
        writer.close()

    def __enter__(self) -> TinyPOP3:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def users() -> Iterator[list[str]]:
    yield [f"u{i}@bench.test" for i in range(5)]


def test_every_message_of_every_mailbox_is_read_over_several_processes(users: list[str]) -> None:
    with TinyPOP3(count=12) as server:
        loaded = download(server.port, users, count=12, batch=5, size=len(BODY), clients=3)
        assert server.sessions == len(users)
    assert loaded.clients == 3
    assert loaded.octets == len(users) * 12 * len(BODY)
    assert loaded.client_cpu_seconds >= 0
    assert loaded.report(len(users) * 12)["load_clients"] == 3


def test_a_message_that_comes_back_short_fails_the_run(users: list[str]) -> None:
    with TinyPOP3(count=12, short=7) as server, pytest.raises(RuntimeError, match=r"message 7 .* not"):
        download(server.port, users, count=12, batch=5, size=len(BODY), clients=2)


def test_a_refused_login_fails_the_run(users: list[str]) -> None:
    with TinyPOP3(count=3) as server, pytest.raises(RuntimeError, match="login failed"):
        download(server.port, users, count=3, batch=5, size=len(BODY), clients=2, password="wrong")
