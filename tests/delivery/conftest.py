"""Delivery test fixtures: a broker connection, publishing as the ingress does, reading queues and mailboxes."""

from __future__ import annotations

import email
import urllib.request
from collections.abc import AsyncIterator, Callable
from email.message import Message
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from services.store import Store
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, wait_until, wait_until_sync

TEST_SCHEDULE = "1s,2s"
TEST_DELAYS = [1, 2]


def make_message(subject: str = "hello", body: str = "Hello there.\r\n", sender: str = "sender@remote.test") -> bytes:
    return (
        f"Received: from client.test by mx.postroom.test\r\nFrom: <{sender}>\r\nTo: <rcpt@example.test>\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject}@remote.test>\r\n\r\n{body}"
    ).encode()


def as_stored(message: bytes, sender: str = "sender@remote.test") -> bytes:
    """`message` as final delivery stores it: the Return-Path of the envelope sender on top (RFC 5321 §4.4)."""
    return f"Return-Path: <{sender}>\r\n".encode() + message


class Broker:
    """Publishes like the ingress (persistent, mandatory, confirmed) and inspects the namespace's queues."""

    def __init__(self, connection: AbstractRobustConnection, namespace: str) -> None:
        self.connection = connection
        self.topology = Topology(namespace)
        self.channel: Any = None
        self.exchange: Any = None

    async def start(self) -> None:
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = await self.topology.declare(self.channel, TEST_DELAYS)

    async def publish(
        self, recipients: list[str], message: bytes | None = None, sender: str = "sender@remote.test", **fields: Any
    ) -> Envelope:
        envelope = Envelope(queue_id=new_queue_id(), mail_from=sender, recipients=tuple(recipients), **fields)
        await self.publish_envelope(envelope, message or make_message())
        return envelope

    async def publish_envelope(self, envelope: Envelope, message: bytes) -> None:
        await self.publish_raw(message, envelope.to_headers(), envelope.queue_id)

    async def publish_raw(self, body: bytes, headers: dict[str, Any], message_id: str | None = None) -> None:
        msg = aio_pika.Message(
            body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id
        )
        await self.exchange.publish(msg, self.topology.incoming, mandatory=True)

    async def depth(self, name: str) -> int:
        channel = await self.connection.channel()
        try:
            underlay = await channel.get_underlay_channel()
            result = await underlay.queue_declare(name, passive=True)
            return int(result.message_count or 0)
        finally:
            await channel.close()

    async def get_all(self, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take every ready message off queue `name` (acked)."""
        channel = await self.connection.channel()
        queue = await channel.get_queue(name)
        taken = []
        for _ in range(10000):
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                break
            taken.append(message)
        await channel.close()
        return taken


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    handle = Broker(connection, namespace)
    await handle.start()
    yield handle
    await connection.close()


@pytest.fixture
async def local_users(store: Store) -> Callable[..., Any]:
    async def add(*addresses: str, quota: int = 0) -> None:
        for address in addresses:
            await store.accounts.add_domain(address.rpartition("@")[2])
            await store.accounts.add_user(address, "secret", quota=quota)

    return add


def metric_lines(service: ServiceProcess) -> list[str]:
    with urllib.request.urlopen(f"{service.metrics_url}/metrics", timeout=5) as response:
        return [line for line in response.read().decode().splitlines() if line.startswith("postroom_delivery")]


def metric(service: ServiceProcess, series: str) -> float:
    """The value of one series, named exactly as /metrics prints it (labels in sorted order)."""
    for line in metric_lines(service):
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"no series {series}")


def report_parts(raw: bytes) -> tuple[Message, list[Message]]:
    """A multipart/report and its parts."""
    report = email.message_from_bytes(raw)
    parts = report.get_payload()
    assert isinstance(parts, list)
    return report, [part for part in parts if isinstance(part, Message)]


def dsn_fields(raw: bytes) -> list[Message]:
    """The field groups of a report's message/delivery-status part: per-message first, then per recipient."""
    _, parts = report_parts(raw)
    groups = parts[1].get_payload()
    assert isinstance(groups, list)
    return [group for group in groups if isinstance(group, Message)]


def text_of(part: Message) -> str:
    payload = part.get_payload()
    assert isinstance(payload, str)
    return payload


async def mailbox(store: Store, address: str) -> list[bytes]:
    messages = []
    for info in await store.mailboxes.snapshot(address):
        data = await store.mailboxes.read(address, info.uid)
        assert data is not None
        messages.append(data)
    return messages


@pytest.fixture
def loopback_net() -> str:
    """A /24 of 127/8 for this test's SMTP sinks (port 25 on each address), one of 25,000: tests running at once (other
    pytest-xdist workers, other checkouts) pick the same one only by a rare chance."""
    import random

    return f"127.{random.randrange(100, 200)}.{random.randrange(1, 250)}"


@pytest.fixture
def zone() -> Any:
    from tests.delivery.dnsserver import Zone

    return Zone()


@pytest.fixture
def dns_server(zone: Any) -> Any:
    from tests.delivery.dnsserver import DNSServer

    server = DNSServer(zone).start()
    yield server
    server.stop()


@pytest.fixture
def sinks() -> Any:
    """Start SMTP sinks with `sinks(address, behaviour)`; all stopped at teardown."""
    from tests.delivery.smtpsink import Sink

    started: list[Sink] = []

    def start(address: str, *args: Any, **kwargs: Any) -> Sink:
        sink = Sink(address, *args, **kwargs).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


async def crash_after_store_then_redeliver(
    start_service: Callable[..., ServiceProcess], broker: Broker, store: Store, address: str, message: bytes
) -> list[bytes]:
    """Publish `message` to `address`; a worker SIGKILLs itself after the store and before the ack; a second worker
    gets the redelivery. Returns the mailbox right after the kill and checks the redelivery was seen as a duplicate
    and the queue drained; the caller asserts on the mailbox before and after."""
    crashing = start_service(
        "delivery", POSTROOM_DELIVERY_FAULT_CRASH_AFTER_STORE="1", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE
    )
    envelope = await broker.publish([address], message)
    wait_until_sync(lambda: crashing.proc is not None and crashing.proc.poll() is not None, what="worker killed")
    assert crashing.proc is not None and crashing.proc.returncode == -9
    after_kill = await mailbox(store, address)

    start_service("delivery", POSTROOM_RETRY_SCHEDULE=TEST_SCHEDULE)

    async def redelivered() -> bool:
        events = await store.trace.events(envelope.queue_id)
        return any(e["event"] == "attempt" and "duplicate" in e["reply"] for e in events)

    async def drained() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(redelivered, what="redelivery recognised as a duplicate")
    await wait_until(drained, what="incoming drained")
    return after_kill
