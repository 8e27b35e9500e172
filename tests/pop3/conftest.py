"""POP3 fixtures: an in-process server on free loopback ports over the test's namespace, and mailbox helpers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.pop3.config import Pop3Settings
from services.pop3.server import PeerOf, Pop3Server, default_peer_of
from services.pop3.state import ServerContext
from services.store import LoginThrottle, Store
from shared.netaddr import HostPort
from shared.queue_id import new_queue_id
from shared.tls import server_context
from tests.helpers import REDIS_URL, client_tls

DOMAIN = "pop.test"
USER = f"alice@{DOMAIN}"
PASSWORD = "correct horse battery staple"

_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """One self-signed server context for the whole run (making a key pair per test is wasted time)."""
    global _TLS
    if _TLS is None:
        _TLS = server_context(None, None, "pop.postroom.test")
    return _TLS


def settings_for(namespace: str, **overrides: Any) -> Pop3Settings:
    values: dict[str, Any] = {
        "namespace": namespace,
        "redis_url": REDIS_URL,
        "hostname": "pop.postroom.test",
        "metrics_listen": None,
        "pop3_listen": HostPort("127.0.0.1", 0),
        "pop3s_listen": HostPort("127.0.0.1", 0),
        "pop3_auth_failure_delay": 0,
        "pop3_autologout": 30.0,
        "pop3_lock_ttl": 10.0,
    }
    values.update(overrides)
    return Pop3Settings(**values)


StartServer = Callable[..., Awaitable[Pop3Server]]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The in-process tests run on uvloop, as the service does (its transports differ from asyncio's)."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def start_pop3(namespace: str, store: Store) -> AsyncIterator[StartServer]:
    """Start an in-process POP3 server; keyword arguments override settings; `peer_of` fakes the client IP."""
    servers: list[Pop3Server] = []

    async def start(
        peer_of: PeerOf = default_peer_of,
        throttle: LoginThrottle | None = None,
        backend: Store | None = None,
        **overrides: Any,
    ) -> Pop3Server:
        settings = settings_for(namespace, **overrides)
        ctx = ServerContext(
            settings=settings,
            store=backend or store,
            tls_context=tls_context(),
            throttle=throttle
            or (backend or store).login_throttle(
                settings.pop3_auth_failure_delay, settings.pop3_auth_failure_delay_max
            ),
        )
        server = Pop3Server(ctx, peer_of=peer_of)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=1)


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
