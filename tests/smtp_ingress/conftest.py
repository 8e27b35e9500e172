"""Fixtures of the ingress tests: an in-process ingress on its own event loop thread, accounts, a queue reader."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.smtp_ingress.config import IngressSettings
from services.store import Store
from shared.topology import Topology
from tests.harness import Harness, OnThread, settings_for
from tests.helpers import AMQP_URL, REDIS_URL
from tests.smtp_ingress.inbound_dns import inbound_dns, inbound_zone, signing_key  # noqa: F401  (fixtures)

T = TypeVar("T")

DOMAIN = "local.test"
ALICE = "alice@local.test"
BOB = "bob@local.test"
PASSWORD = "correct horse battery staple"
HOSTNAME = "mx.postroom.test"


RunningIngress = OnThread  # an ingress on a loop thread of its own (tests/harness.py)


def ingress_settings(namespace: str, **overrides: Any) -> IngressSettings:
    settings: IngressSettings = settings_for("smtp_ingress", namespace, **overrides)
    return settings


@pytest.fixture
def make_ingress(harness: Harness) -> Callable[..., RunningIngress]:
    """Start an in-process ingress with the test's namespace and setting overrides; stopped at teardown."""

    def make(wait_ready: bool = True, **overrides: Any) -> RunningIngress:
        return harness.thread("smtp_ingress", wait_ready, **overrides)

    return make


@pytest.fixture
def ingress(make_ingress: Callable[..., RunningIngress], accounts: None) -> RunningIngress:
    return make_ingress()


def run_store(namespace: str, action: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        store = Store.connect(REDIS_URL, namespace)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def accounts(namespace: str) -> None:
    """local.test with alice and bob; sales@ is an alias of alice."""

    async def setup(store: Store) -> None:
        await store.accounts.add_domain(DOMAIN)
        await store.accounts.add_user(ALICE, PASSWORD)
        await store.accounts.add_user(BOB, PASSWORD)
        await store.accounts.add_alias("sales@local.test", [ALICE])

    run_store(namespace, setup)


@dataclass
class Queued:
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    delivery_mode: int


def read_queue(namespace: str, count: int = 1, timeout: float = 10, url: str = AMQP_URL) -> list[Queued]:
    """Take `count` messages off the namespace's incoming queue (acked), waiting up to `timeout` seconds."""

    async def go() -> list[Queued]:
        connection = await aio_pika.connect(url, timeout=5)
        async with connection:
            channel = await connection.channel()
            await Topology(namespace).declare(channel)
            queue = await channel.get_queue(Topology(namespace).incoming)
            await channel.set_qos(prefetch_count=count)
            arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            tag = await queue.consume(arrived.put)
            found: list[Queued] = []
            try:
                async with asyncio.timeout(timeout):
                    while len(found) < count:
                        message = await arrived.get()
                        await message.ack()
                        found.append(
                            Queued(
                                message.body,
                                dict(message.headers),
                                message.message_id,
                                int(message.delivery_mode or 0),
                            )
                        )
            except TimeoutError:
                pass  # fewer than `count` arrived: the caller asserts on what did
            finally:
                await queue.cancel(tag)
            return found

    return asyncio.run(go())


def queue_depth(namespace: str) -> int:
    async def go() -> int:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(Topology(namespace).incoming, passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(go())


def send(client: smtplib.SMTP, sender: str, recipients: list[str], message: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT..., DATA on an open session; returns the reply to the final dot."""
    code, reply = client.mail(sender)
    assert code == 250, reply
    for rcpt in recipients:
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
    return client.data(message)


SIMPLE_MESSAGE = b"From: alice@local.test\r\nTo: bob@local.test\r\nSubject: hello\r\n\r\nHello Bob.\r\n"
