"""The POP3 paths against a Redis Cluster (issue 6): every mailbox key shares a hash slot, so each script runs."""

from __future__ import annotations

import asyncio
import poplib
from collections.abc import AsyncIterator, Callable

import pytest

from services.pop3 import replies
from services.store import Store
from tests.harness import ServiceProcess
from tests.pop3.conftest import DOMAIN, PASSWORD, USER, Client, StartServer, deliver, message
from tests.redis_cluster import RedisClusterProcesses


@pytest.fixture
async def cluster_store(redis_cluster: RedisClusterProcesses, namespace: str) -> AsyncIterator[Store]:
    store = Store.connect(redis_cluster.url, namespace, cluster=True)
    await store.accounts.add_domain(DOMAIN)
    await store.accounts.add_user(USER, PASSWORD)
    yield store
    await store.close()


async def test_session_on_a_cluster(start_pop3: StartServer, cluster_store: Store) -> None:
    server = await start_pop3(backend=cluster_store)
    bodies = [message("one", ".dot\r\n"), message("two")]
    await deliver(cluster_store, *bodies)
    first = await Client.connect(server.ports["pop3"])
    assert (await first.login()).startswith("+OK Maildrop has 2 messages")
    second = await Client.connect(server.ports["pop3"])
    assert await second.login() == "-ERR " + replies.ERR_IN_USE.text
    assert await first.cmd("RETR 1") == f"+OK {len(bodies[0])} octets"
    assert (await first.raw_multiline()).endswith(b"\r\n..dot\r\n")
    assert (await first.cmd("TOP 2 0")).startswith("+OK")
    await first.raw_multiline()
    assert (await first.cmd("DELE 1")).startswith("+OK")
    assert await first.cmd("QUIT") == "+OK " + replies.ok_update(1).text
    assert (await second.login()).startswith("+OK Maildrop has 1 message")
    await second.close()
    assert [m.size for m in await cluster_store.mailboxes.snapshot(USER)] == [len(bodies[1])]


async def test_service_process_on_a_cluster(
    start_service: Callable[..., ServiceProcess],
    base_env: dict[str, str],
    redis_cluster: RedisClusterProcesses,
    cluster_store: Store,
) -> None:
    start_service("pop3", POSTROOM_REDIS_URL=redis_cluster.url, POSTROOM_REDIS_CLUSTER="true")
    body = message("through the cluster")
    await deliver(cluster_store, body)
    port = int(base_env["POSTROOM_POP3_LISTEN"].rsplit(":", 1)[1])

    def session() -> list[bytes]:
        client = poplib.POP3("127.0.0.1", port, timeout=20)
        client.user(USER)
        client.pass_(PASSWORD)
        lines = client.retr(1)[1]
        client.dele(1)
        client.quit()
        return lines

    assert b"\r\n".join(await asyncio.to_thread(session)) + b"\r\n" == body
    assert await cluster_store.mailboxes.snapshot(USER) == []
