"""Batched acks against the real broker: a slow delivery in the middle, a requeue in between, a channel that the
broker closes between completion and ack (the slow relay still in hand finishes, once: its redelivery waits for
it and finds it recorded), and a worker SIGKILLed while holding finished but unacked deliveries.

What proves an ack went out: closing the consumer's connection returns every unacked delivery to the queue, so the
queue's depth right after says exactly which ones were not acked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from services.delivery import outcome
from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.delivery.outcome import RecipientOutcome
from services.delivery.publisher import DeliveryPublisher
from services.delivery.routing import Target
from services.store import Store
from shared.envelope import Envelope
from shared.settings import load_settings
from tests.delivery.conftest import Broker, make_message
from tests.faults.proxy import FaultProxy
from tests.harness import ServiceProcess
from tests.helpers import AMQP_URL, wait_until

LOCAL = [f"user{i}@example.test" for i in range(5)]


class Remote:
    """Relays at once, except: `slow@` waits for the gate, and `flaky@` is refused (4xx) on its first attempt."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: dict[str, int] = {}

    async def __call__(
        self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
    ) -> list[RecipientOutcome]:
        for target in targets:
            self.calls[target.address] = self.calls.get(target.address, 0) + 1
            if target.address.startswith("slow@"):
                await self.gate.wait()
            if target.address.startswith("flaky@") and self.calls[target.address] == 1:
                return [outcome.temporary(t.address, "4.4.1", "busy", "smtp", "mx.remote.test") for t in targets]
        return [outcome.delivered(t.address, "250 ok", "smtp", "mx.remote.test") for t in targets]


class RefusingPublisher(DeliveryPublisher):
    """Refuses the first retry of `flaky@`, as a broker refusing the publish would: that message is nacked."""

    refused = False

    async def defer(self, body: bytes, envelope: Envelope, delay: int) -> None:
        if not self.refused and any(r.startswith("flaky@") for r in envelope.recipients):
            self.refused = True
            raise ConnectionError("the broker refused the retry")
        await super().defer(body, envelope, delay)


class Worker:
    """A consumer in this process with its own broker connection, closed abruptly by `drop`."""

    def __init__(self, store: Store, broker: Broker, namespace: str, url: str = AMQP_URL, **settings: Any) -> None:
        self.url = url
        self.settings = load_settings(DeliverySettings, namespace=namespace, retry_schedule="1s,2s", **settings)
        self.store = store
        self.broker = broker
        self.remote = Remote()
        self.connection: Any = None
        self.consumer: Consumer | None = None

    async def start(self) -> Consumer:
        self.connection = await aio_pika.connect_robust(self.url)
        publisher = RefusingPublisher(self.connection, self.broker.topology, self.settings.retry_schedule)
        await publisher.start()
        self.consumer = Consumer(self.settings, self.store, self.connection, publisher, self.remote)
        await self.consumer.start()
        return self.consumer

    def pending(self) -> int:
        """Finished deliveries whose ack is not written yet."""
        assert self.consumer is not None
        return self.consumer._acks.pending()

    def busy(self) -> bool:
        assert self.consumer is not None
        return bool(self.consumer._tasks)

    async def underlay(self) -> Any:
        assert self.consumer is not None
        return await self.consumer._channel.get_underlay_channel()

    async def drop(self) -> None:
        """Close the connection without settling anything more: the broker requeues whatever is unacked."""
        if self.connection is not None and not self.connection.is_closed:
            await self.connection.close()
        self.remote.gate.set()  # let the tasks still in hand end (their acks go nowhere: the channel is gone)


@pytest.fixture
async def users(store: Store) -> Store:
    await store.accounts.add_domain("example.test")
    for user in LOCAL:
        await store.accounts.add_user(user, "pw")
    return store


@pytest.fixture
async def worker(users: Store, broker: Broker, namespace: str) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    started: list[Worker] = []

    async def start(url: str = AMQP_URL, **settings: Any) -> Worker:
        handle = Worker(users, broker, namespace, url, **settings)
        await handle.start()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.drop()


async def publish(broker: Broker, recipient: str, i: int) -> Envelope:
    return await broker.publish([recipient], make_message(f"m{i}", body=f"message {i}\r\n"))


async def stored(store: Store) -> dict[str, list[str]]:
    return {user: [m.uid for m in await store.mailboxes.snapshot(user)] for user in LOCAL}


async def wait_stored(store: Store, count: int) -> None:
    async def enough() -> bool:
        return sum(len(uids) for uids in (await stored(store)).values()) >= count

    await wait_until(enough, what=f"{count} stored")


async def slow_then_stored(broker: Broker, users: Store, count: int) -> list[Envelope]:
    """A slow remote delivery first, then `count` local ones, all stored: their acks are held behind the slow one."""
    await broker.publish(["slow@remote.test"])
    local = [await publish(broker, LOCAL[i % 5], i) for i in range(count)]
    await wait_stored(users, count)
    return local


async def wait_held(handle: Worker, count: int) -> None:
    async def held() -> bool:
        return handle.pending() == count

    await wait_until(held, what=f"{count} finished and held behind the slow one")


async def assert_once(store: Store, envelopes: list[Envelope]) -> None:
    found = await stored(store)
    for envelope in envelopes:
        [user] = envelope.recipients
        assert found[user].count(envelope.queue_id) == 1, f"{envelope.queue_id} not stored exactly once"


async def test_a_slow_delivery_and_a_requeue_in_between_then_one_multiple_ack(
    worker: Callable[..., Awaitable[Worker]], broker: Broker, users: Store
) -> None:
    handle = await worker(delivery_ack_hold="3600", delivery_prefetch=100, delivery_concurrency=100)
    channel = await handle.underlay()
    await broker.publish(["slow@remote.test"])
    local = [await publish(broker, LOCAL[i % 5], i) for i in range(5)]
    await broker.publish(["flaky@remote.test"])  # its retry refused: nacked (requeued), redelivered behind the others
    local += [await publish(broker, LOCAL[i % 5], i) for i in range(5, 10)]
    await wait_stored(users, 10)

    async def all_finished() -> bool:
        return handle.remote.calls.get("flaky@remote.test") == 2 and handle.pending() == 11

    await wait_until(all_finished, what="ten stored and the flaky one relayed, all held behind the slow one")
    handle.remote.gate.set()

    async def acked() -> bool:
        return handle.pending() == 0 and not handle.busy()

    await wait_until(acked, what="acks written")
    assert await handle.underlay() is channel  # never closed by the broker (no unknown or double-acked tag)
    await handle.drop()

    async def settled() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(settled, what="nothing requeued when the connection closed")
    await assert_once(users, local)
    assert handle.remote.calls == {"slow@remote.test": 1, "flaky@remote.test": 2}


async def test_acks_behind_a_slow_delivery_go_out_alone_after_the_hold(
    worker: Callable[..., Awaitable[Worker]], broker: Broker, users: Store
) -> None:
    handle = await worker(delivery_ack_hold="0.05", delivery_prefetch=100, delivery_concurrency=100)
    local = await slow_then_stored(broker, users, 6)

    async def acked() -> bool:
        return handle.pending() == 0

    await wait_until(acked, what="the held acks written on their own")
    assert not handle.remote.gate.is_set()
    await handle.drop()  # the slow one was never acked: it alone comes back

    async def only_the_slow_one_back() -> bool:
        return await broker.depth(broker.topology.incoming) == 1

    await wait_until(only_the_slow_one_back, what="the slow delivery requeued, and only it")
    [back] = await broker.get_all(broker.topology.incoming)
    assert Envelope.from_headers(dict(back.headers or {})).recipients == ("slow@remote.test",)
    await assert_once(users, local)


async def test_channel_closed_between_completion_and_ack(
    worker: Callable[..., Awaitable[Worker]], broker: Broker, users: Store
) -> None:
    handle = await worker(delivery_ack_hold="3600", delivery_prefetch=100, delivery_concurrency=100)
    old = await handle.underlay()
    local = await slow_then_stored(broker, users, 5)
    await wait_held(handle, 5)
    # An ack of a tag the channel never had: the broker closes the channel (406); aio_pika opens a new one and
    # consumes again, so all six come back with new tags from 1 while the old slow delivery is still in hand (the
    # channel's close does not cancel it).
    await old.basic_ack(10_000)

    async def reopened() -> bool:  # the five redelivered, found stored already (dedup), held behind the slow one
        channel = await handle.underlay()
        return channel is not old and handle.pending() == 5

    await wait_until(reopened, what="a new channel and the redelivered five finished on it")
    new = await handle.underlay()
    assert handle.remote.calls == {"slow@remote.test": 1}  # its redelivery waits for the old delivery to end
    handle.remote.gate.set()  # the old one relays (its ack goes nowhere); the redelivery finds it recorded

    async def acked() -> bool:
        return handle.pending() == 0 and not handle.busy()

    await wait_until(acked, what="acks written")
    assert await handle.underlay() is new  # no stale tag reached the new channel
    await handle.drop()

    async def settled() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(settled, what="nothing requeued when the connection closed")
    await assert_once(users, local)
    assert handle.remote.calls == {"slow@remote.test": 1}  # relayed once: the redelivery skipped it


async def test_connection_lost_between_completion_and_ack_then_consuming_again(
    worker: Callable[..., Awaitable[Worker]], broker: Broker, users: Store
) -> None:
    host, port = urlsplit(AMQP_URL).hostname or "127.0.0.1", urlsplit(AMQP_URL).port or 5672
    proxy = FaultProxy(host, port).start()
    proxy.enable()
    try:
        url = AMQP_URL.replace(f":{port}", f":{proxy.port}").rstrip("/") + "/?reconnect_interval=0.2"
        handle = await worker(url, delivery_ack_hold="3600", delivery_prefetch=100, delivery_concurrency=100)
        local = await slow_then_stored(broker, users, 5)
        await wait_held(handle, 5)
        proxy.cut()  # as if the broker crashed: the connection is gone, the held acks were never written
        proxy.enable()

        async def consuming_again() -> bool:  # our own consumer, subscribed again on the new connection's channel
            return handle.pending() == 5

        await wait_until(consuming_again, what="redelivered on the new connection and finished again")
        assert handle.remote.calls == {"slow@remote.test": 1}  # the slow redelivery waits for the old delivery
        local += [await publish(broker, LOCAL[i % 5], i) for i in range(5, 8)]
        await wait_stored(users, 8)
        handle.remote.gate.set()

        async def acked() -> bool:
            return handle.pending() == 0 and not handle.busy()

        await wait_until(acked, what="acks written")
        await handle.drop()

        async def settled() -> bool:
            return await broker.depth(broker.topology.incoming) == 0

        await wait_until(settled, what="nothing requeued when the connection closed")
        await assert_once(users, local)
        assert handle.remote.calls == {"slow@remote.test": 1}
    finally:
        proxy.stop()


async def test_worker_sigkilled_with_finished_unacked_deliveries(
    start_service: Callable[..., ServiceProcess], broker: Broker, users: Store, sinks: Any, loopback_net: str
) -> None:
    # The first worker's relay connects to a listener that never accepts: the greeting never comes.
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(8)
    try:
        env = {
            "POSTROOM_DELIVERY_ACK_HOLD": "3600",
            "POSTROOM_DELIVERY_PREFETCH": "100",
            "POSTROOM_RETRY_SCHEDULE": "1s,2s",
        }
        port = stall.getsockname()[1]
        first = start_service("delivery", **env, POSTROOM_TRANSPORT_MAP=f"slow.test=[127.0.0.1]:{port}")
        await broker.publish(["slow@slow.test"])
        local = [await publish(broker, LOCAL[i % 5], i) for i in range(20)]
        await wait_stored(users, 20)
        first.kill()
        assert first.proc is not None and first.proc.returncode == -9
    finally:
        stall.close()

    async def all_back() -> bool:  # stored, but none acked: all twenty-one return to the queue
        return await broker.depth(broker.topology.incoming) == 21

    await wait_until(all_back, what="every delivery requeued")
    sink = sinks(f"{loopback_net}.1")
    start_service("delivery", **env, POSTROOM_TRANSPORT_MAP=f"slow.test=[{loopback_net}.1]")

    async def relayed() -> bool:
        return len(sink.received) == 1

    await wait_until(relayed, what="the slow message relayed")

    async def drained() -> bool:
        return await broker.depth(broker.topology.incoming) == 0

    await wait_until(drained, what="incoming drained")
    await assert_once(users, local)
    for envelope in local:
        events = await users.trace.events(envelope.queue_id)
        assert any(e["event"] == "attempt" and "duplicate" in e["reply"] for e in events), "redelivery not deduped"
