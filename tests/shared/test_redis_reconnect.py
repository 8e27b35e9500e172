"""Redis clients from shared/connections.py reconnect unseen after a restart, repeat a command whose reply was lost
without harm, and still fail, not hang, when Redis stays away (private redis-servers only)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.store import Store, StoreOutcome, lua
from shared.connections import connect_redis
from shared.queue_id import new_queue_id
from tests.helpers import free_port
from tests.redis_cluster import RedisClusterProcesses
from tests.redis_private import PrivateRedis

ADDRESS = "carol@example.test"
BODY = b"Subject: once\r\n\r\nbody\r\n"


async def test_a_restart_is_not_seen_by_the_next_command(private_redis: PrivateRedis) -> None:
    store = Store.connect(private_redis.url, "t", coalesce=True)
    try:
        await store.accounts.add_domain("example.test")
        await store.accounts.add_user(ADDRESS, "pw")
        private_redis.restart()  # the append-only file keeps the account
        assert await store.ping()
        private_redis.restart()
        assert await store.accounts.authenticate(ADDRESS, "pw")
        private_redis.restart()
        assert (await store.accounts.lookup(ADDRESS)).user  # a pipeline, shared through the coalescer
        private_redis.restart()
        queue_id = new_queue_id()  # a script the restart dropped from Redis's cache (NOSCRIPT, loaded again)
        assert await store.mailboxes.deliver_many([ADDRESS], queue_id, BODY) == [StoreOutcome.STORED]
        private_redis.restart()
        assert await store.mailboxes.acquire_lock(ADDRESS, 30) is not None
    finally:
        await store.close()


async def test_a_cluster_restart_is_not_seen_by_the_next_command(tmp_path: Path) -> None:
    cluster = RedisClusterProcesses(tmp_path).start()
    store = Store.connect(cluster.url, "t", cluster=True)
    try:
        for _ in range(2):
            await store.accounts.add_domain("example.test")  # a cluster restart loses the data (no persistence)
            await store.accounts.add_user(ADDRESS, "pw")
            assert await store.mailboxes.deliver(ADDRESS, new_queue_id(), BODY) is StoreOutcome.STORED
            cluster.restart()
            assert await store.ping()
            assert not await store.accounts.user_exists(ADDRESS)
    finally:
        await store.close()
        cluster.stop()


class ReplyCutter:
    """A TCP proxy to Redis that, once armed with a pattern, lets the next request holding it through and then drops
    the reply by resetting the client's connection: the worst moment, when the command has run and the client cannot
    know it."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.pattern: bytes | None = None
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> ReplyCutter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        cut = False

        async def upstream() -> None:
            nonlocal cut
            while data := await reader.read(65536):
                if self.pattern is not None and self.pattern in data:
                    self.pattern, cut = None, True
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if cut:
                    self.cuts += 1
                    return
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(Exception):
            await asyncio.wait(
                [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        writer.transport.abort()
        up_writer.transport.abort()


def sha(script: str) -> bytes:
    return hashlib.sha1(script.encode()).hexdigest().encode()


@pytest.fixture
async def cutter(private_redis: PrivateRedis) -> AsyncIterator[ReplyCutter]:
    proxy = await ReplyCutter(private_redis.port).start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("coalesce", [False, True])
async def test_a_command_whose_reply_was_lost_runs_again_without_harm(cutter: ReplyCutter, coalesce: bool) -> None:
    """Every write on the mail and login paths, its reply lost after it ran: repeated, it leaves the state one run
    leaves and answers as the first run would have (lua.py's scripts recognise their own earlier write)."""
    store = Store.connect(f"redis://127.0.0.1:{cutter.port}/0", "t", coalesce=coalesce)
    box = store.keys.mailbox(ADDRESS)
    try:
        scripts = [lua.CREATE_ACCOUNT, lua.UPDATE_ACCOUNT, lua.STORE_MESSAGE, lua.ACQUIRE_LOCK]
        for script in [*scripts, lua.DELETE_MESSAGES, lua.RELEASE_LOCK]:
            await store.redis.script_load(script)  # so that each EVALSHA cut below is one that ran
        cutter.pattern = b"SADD"
        await store.accounts.add_domain("example.test")
        cutter.pattern = sha(lua.CREATE_ACCOUNT)
        await store.accounts.add_user(ADDRESS, "first")  # no ConflictError from its own account
        cutter.pattern = sha(lua.UPDATE_ACCOUNT)
        await store.accounts.set_password(ADDRESS, "second")
        assert await store.accounts.authenticate(ADDRESS, "second")

        queue_id = new_queue_id()
        cutter.pattern = sha(lua.STORE_MESSAGE)
        outcome = await store.mailboxes.deliver_many([ADDRESS], queue_id, BODY)
        assert outcome in ([StoreOutcome.STORED], [StoreOutcome.DUPLICATE])  # both count as delivered
        assert [m.uid for m in await store.mailboxes.snapshot(ADDRESS)] == [queue_id]
        assert await store.redis.hgetall(box.usage) == {b"messages": b"1", b"bytes": str(len(BODY)).encode()}

        cutter.pattern = sha(lua.ACQUIRE_LOCK)
        token = await store.mailboxes.acquire_lock(ADDRESS, 30)  # not "in use" by its own first run
        assert token is not None and await store.mailboxes.owns_lock(ADDRESS, token)
        cutter.pattern = sha(lua.DELETE_MESSAGES)
        assert await store.mailboxes.delete(ADDRESS, token, [queue_id]) is not None  # 1, or 0 when repeated
        assert await store.mailboxes.snapshot(ADDRESS) == []
        assert await store.redis.hgetall(box.usage) == {b"messages": b"0", b"bytes": b"0"}
        cutter.pattern = sha(lua.RELEASE_LOCK)
        await store.mailboxes.release_lock(ADDRESS, token)
        assert await store.redis.get(box.lock) is None
        assert cutter.cuts == 7
    finally:
        await store.close()


async def test_a_redis_that_stays_away_fails_at_once() -> None:
    """Refused: a few quick retries, then the error. Never a hang."""
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=5)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(client.ping(), timeout=60)
    finally:
        await client.aclose()


async def test_a_timeout_is_not_repeated() -> None:
    """A Redis that accepts and never answers costs one socket timeout, not one per retry: it is tried once."""
    accepted = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect_redis(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1, socket_timeout=1)
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(client.ping(), timeout=60)
        assert accepted == 1
    finally:
        await client.aclose()
        server.close()
