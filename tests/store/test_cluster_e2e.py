"""The whole system on a Redis Cluster: SMTP → RabbitMQ → delivery → mailbox → POP3, the trace and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import poplib
import smtplib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from services.store import Store
from shared.netaddr import parse_host_port
from tests.harness import ServiceProcess
from tests.helpers import ROOT, wait_until
from tests.redis_cluster import RedisClusterProcesses

PASSWORD = "cluster pass"


@pytest.fixture
async def cluster_store(namespace: str, redis_cluster: RedisClusterProcesses) -> AsyncIterator[Store]:
    handle = Store.connect(redis_cluster.url, namespace, cluster=True)
    yield handle
    await handle.close()


async def test_mail_path_and_trace_on_a_redis_cluster(
    cluster_store: Store,
    redis_cluster: RedisClusterProcesses,
    base_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> None:
    cluster_env = {"POSTROOM_REDIS_URL": redis_cluster.url, "POSTROOM_REDIS_CLUSTER": "true"}
    env = {**os.environ, **base_env, **cluster_env}
    cli = [sys.executable, "-c", "from services.store.cli import main; main()"]

    def postroom(*args: str, stdin: str = "") -> str:
        done = subprocess.run([*cli, *args], env=env, cwd=ROOT, input=stdin.encode(), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    await asyncio.to_thread(postroom, "domain", "add", "example.test")
    await asyncio.to_thread(postroom, "user", "add", "carol@example.test", "--password-stdin", stdin=PASSWORD + "\n")
    for name in ("store", "smtp_ingress", "delivery", "pop3"):
        start_service(name, **cluster_env)

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", parse_host_port(base_env["POSTROOM_SMTP_LISTEN"]).port, timeout=30) as smtp:
            smtp.ehlo("client.remote.test")
            return smtp.sendmail("dan@remote.test", ["carol@example.test"], b"Subject: cluster\r\n\r\nhi\r\n")

    assert await asyncio.to_thread(send) == {}  # no recipient refused

    async def stored() -> bool:
        return len(await cluster_store.mailboxes.snapshot("carol@example.test")) == 1

    await wait_until(stored, timeout=30, what="message stored on the cluster")
    queue_id = (await cluster_store.mailboxes.snapshot("carol@example.test"))[0].uid

    def fetch() -> list[bytes]:
        pop = poplib.POP3("127.0.0.1", parse_host_port(base_env["POSTROOM_POP3_LISTEN"]).port, timeout=30)
        pop.user("carol@example.test")
        pop.pass_(PASSWORD)
        _, lines, _ = pop.retr(1)
        pop.dele(1)
        pop.quit()
        return list(lines)

    lines = await asyncio.to_thread(fetch)
    assert lines[0] == b"Return-Path: <dan@remote.test>"  # added at final delivery (RFC 5321 §4.4)
    assert b"Subject: cluster" in lines
    assert await cluster_store.mailboxes.snapshot("carol@example.test") == []

    async def traced() -> bool:
        events = [e["event"] for e in await cluster_store.trace.events(queue_id)]
        return events[:2] == ["accepted", "queued"] and "stored" in events

    await wait_until(traced, what="accepted, queued and stored in the trace")
    shown = json.loads(await asyncio.to_thread(postroom, "trace", queue_id, "--json"))
    assert [e["event"] for e in shown["events"]][:2] == ["accepted", "queued"]
    users = json.loads(await asyncio.to_thread(postroom, "user", "list", "--json"))
    assert [(u["address"], u["messages"]) for u in users] == [("carol@example.test", 0)]
