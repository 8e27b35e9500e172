"""POP3 fixtures: an in-process server on the test's loop (tests/harness.py), a raw client, mailbox helpers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from services.pop3.server import PeerOf, Pop3Server, default_peer_of
from services.store import LoginThrottle, Store
from shared.queue_id import new_queue_id
from tests.harness import Harness
from tests.helpers import client_tls

DOMAIN = "pop.test"
USER = f"alice@{DOMAIN}"
PASSWORD = "correct horse battery staple"

StartServer = Callable[..., Awaitable[Pop3Server]]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The in-process tests run on uvloop, as the service does (its transports differ from asyncio's)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def start_pop3(store: Store, harness_in_loop: Harness) -> StartServer:
    """Start an in-process POP3 server on the test's loop (stopped before `store` closes); keyword arguments override
    settings; `peer_of` fakes the client IP; `backend` replaces the test's store, `throttle` the login throttle."""

    async def start(
        peer_of: PeerOf = default_peer_of,
        throttle: LoginThrottle | None = None,
        backend: Store | None = None,
        **overrides: Any,
    ) -> Pop3Server:
        server: Pop3Server = await harness_in_loop.in_loop(
            "pop3", peer_of=peer_of, throttle=throttle, backend=backend or store, **overrides
        )
        return server

    return start


@pytest.fixture
async def pop3(start_pop3: StartServer) -> Pop3Server:
    return await start_pop3()


@pytest.fixture
async def account(store: Store) -> str:
    await store.accounts.add_domain(DOMAIN)
    await store.accounts.add_user(USER, PASSWORD)
    return USER


def message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return f"From: bob@example.org\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}".encode()


async def deliver(store: Store, *messages: bytes, address: str = USER) -> list[str]:
    """Store messages as the delivery service would; returns their uids (queue ids) in order."""
    uids = []
    for body in messages:
        queue_id = new_queue_id()
        outcome = await store.mailboxes.deliver(address, queue_id, body)
        assert outcome.value == "stored"
        uids.append(queue_id)
    return uids


class Client:
    """A raw POP3 client over asyncio streams, for what poplib cannot do (pipelining, bad input, STLS tricks)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, tls: bool = False) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls() if tls else None, limit=64 << 20
        )
        client = cls(reader, writer)
        greeting = await client.line()
        assert greeting.startswith("+OK"), greeting
        return client

    async def line(self, timeout: float = 20) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        assert raw.endswith(b"\r\n") or raw == b"", raw
        return raw.decode("utf-8", "replace").removesuffix("\r\n")

    async def raw_multiline(self, timeout: float = 20) -> bytes:
        """The body of a multi-line reply as sent (still dot-stuffed), up to but excluding the dot line."""
        data = await asyncio.wait_for(self.reader.readuntil(b"\r\n.\r\n"), timeout)
        return data[: -len(b".\r\n")]

    async def send(self, text: str | bytes) -> None:
        self.writer.write(text.encode() if isinstance(text, str) else text)
        await self.writer.drain()

    async def cmd(self, text: str) -> str:
        await self.send(text + "\r\n")
        return await self.line()

    async def multiline(self, text: str) -> tuple[str, list[str]]:
        head = await self.cmd(text)
        assert head.startswith("+OK"), head
        lines = []
        while (line := await self.line()) != ".":
            lines.append(line)
        return head, lines

    async def login(self, user: str = USER, password: str = PASSWORD) -> str:
        assert (await self.cmd(f"USER {user}")).startswith("+OK")
        return await self.cmd(f"PASS {password}")

    async def closed(self, timeout: float = 20) -> bool:
        return await asyncio.wait_for(self.reader.read(1), timeout) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
