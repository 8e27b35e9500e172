"""Fixtures of the ingress tests: an in-process ingress on its own event loop thread, accounts, a queue reader."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import pytest
import uvloop
from aio_pika.abc import AbstractIncomingMessage

from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.config import IngressSettings
from services.store import Store
from shared.netaddr import HostPort
from shared.topology import Topology
from tests.helpers import AMQP_URL, REDIS_URL, client_tls, wait_until_sync
from tests.smtp_ingress.inbound_dns import inbound_dns, inbound_zone, signing_key  # noqa: F401  (fixtures)

T = TypeVar("T")

DOMAIN = "local.test"
ALICE = "alice@local.test"
BOB = "bob@local.test"
PASSWORD = "correct horse battery staple"
HOSTNAME = "mx.postroom.test"


@dataclass
class RunningIngress:
    """An IngressApp running on an event loop in a thread of its own, so tests can use blocking clients."""

    app: IngressApp
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def settings(self) -> IngressSettings:
        return self.app.settings

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, listener: str) -> int:
        return self.app.server.port(listener)

    def smtp(self, listener: str = "smtp", timeout: float = 10) -> smtplib.SMTP:
        if listener == "smtps":
            return smtplib.SMTP_SSL("127.0.0.1", self.port(listener), timeout=timeout, context=client_tls())
        return smtplib.SMTP("127.0.0.1", self.port(listener), timeout=timeout)

    def ready(self) -> bool:
        return self.run(self.app.ready())

    def stop(self) -> None:
        if self.loop.is_running():
            self.run(self.app.stop(), timeout=60)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def ingress_settings(namespace: str, **overrides: Any) -> IngressSettings:
    values: dict[str, Any] = {
        "namespace": namespace,
        "amqp_url": AMQP_URL,
        "redis_url": REDIS_URL,
        "hostname": HOSTNAME,
        "smtp_listen": HostPort("127.0.0.1", 0),
        "submission_listen": HostPort("127.0.0.1", 0),
        "smtps_listen": HostPort("127.0.0.1", 0),
        "metrics_listen": None,
        "smtp_auth_failure_delay": 0.01,
        "smtp_auth_failure_delay_max": 0.05,
        "smtp_publish_timeout": 5.0,
        "smtp_drain_timeout": 10.0,
        # The inbound checks would ask the machine's resolver about the test domains; the tests of the checks turn
        # them on with a local DNS server (test_inbound.py).
        "inbound_checks": False,
    }
    values.update(overrides)
    return IngressSettings(**values)


def start_ingress(settings: IngressSettings, wait_ready: bool = True) -> RunningIngress:
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="ingress-loop")
    thread.start()

    async def build() -> IngressApp:
        app = IngressApp(settings)
        await app.start()
        return app

    running = RunningIngress(asyncio.run_coroutine_threadsafe(build(), loop).result(30), loop, thread)
    if wait_ready:
        wait_until_sync(running.ready, 20, what="ingress ready")
    return running


@pytest.fixture
def make_ingress(namespace: str) -> Iterator[Callable[..., RunningIngress]]:
    """Start an in-process ingress with the test's namespace and setting overrides; stopped at teardown."""
    started: list[RunningIngress] = []

    def make(wait_ready: bool = True, **overrides: Any) -> RunningIngress:
        running = start_ingress(ingress_settings(namespace, **overrides), wait_ready)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


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
