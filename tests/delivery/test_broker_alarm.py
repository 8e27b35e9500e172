"""A broker resource alarm on a private RabbitMQ node (tests/rabbitmq_node.py): the delivery's acks do not wait
behind its own blocked publishes, a publish while blocked writes nothing, and both connections come back after the
broker drops them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from aiosmtpd.controller import Controller

from services.delivery import publisher as publisher_module
from services.delivery.publisher import DeliveryPublisher
from services.store import Store
from shared.connections import connect_amqp, publishing_blocked
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.delivery.conftest import Broker, mailbox
from tests.delivery.smtpsink import Behaviour, SinkHandler
from tests.harness import ServiceProcess
from tests.helpers import http_status, wait_until
from tests.rabbitmq_node import RabbitMQNode

# One retry step, long enough that a deferred message stays in its delay queue for the whole test.
SCHEDULE = "1h"
DELAY_SECONDS = 3600


class GatedHandler(SinkHandler):
    """Holds every RCPT (or final dot) until `gate` opens, counting those waiting, then answers per behaviour."""

    def __init__(self, behaviour: Behaviour, at: str) -> None:
        super().__init__(behaviour)
        self.at = at
        self.gate = threading.Event()
        self.waiting = 0

    async def _hold(self) -> None:
        with self.lock:
            self.waiting += 1
        await asyncio.to_thread(self.gate.wait, 120)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.at == "RCPT":
            await self._hold()
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.at == "DATA":
            await self._hold()
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def gated_mx() -> Any:
    """`gated_mx(address, at, behaviour)`: an SMTP server on address:25 holding at RCPT or DATA; gates opened and
    servers stopped at teardown."""
    started: list[tuple[Controller, GatedHandler]] = []

    def start(address: str, at: str, behaviour: Behaviour | None = None) -> GatedHandler:
        handler = GatedHandler(behaviour or Behaviour(), at)
        controller = Controller(handler, hostname=address, port=25, server_hostname="gated.test", ready_timeout=10)
        controller.start()
        started.append((controller, handler))
        return handler

    yield start
    for controller, handler in started:
        handler.gate.set()
        controller.stop()


@pytest.fixture
async def node_broker(rabbitmq_node: RabbitMQNode, namespace: str) -> AsyncIterator[Broker]:
    """Publishes like the ingress, to the private node."""
    connection = await aio_pika.connect_robust(rabbitmq_node.url)
    handle = Broker(connection, namespace)
    await handle.start()
    yield handle
    await connection.close()


def delivery_connections(node: RabbitMQNode) -> list[tuple[str, str]]:
    return [(name, state) for name, state in node.connections() if name.startswith("postroom-delivery")]


async def test_acks_go_out_while_a_retry_publish_is_blocked(
    rabbitmq_node: RabbitMQNode,
    node_broker: Broker,
    start_service: Callable[..., ServiceProcess],
    zone: Any,
    dns_server: Any,
    gated_mx: Any,
    loopback_net: str,
) -> None:
    """Three messages relayed (250) finish while a fourth one's retry publish is blocked by a memory alarm: the
    broker sees the three acked at once, not when the alarm clears. (On one shared connection, before, their acks
    waited behind the blocked publish in a socket the broker no longer read.)"""
    node = rabbitmq_node
    zone.add("later.test", "MX", "10 mx.later.test.")
    zone.add("mx.later.test", "A", f"{loopback_net}.1")
    zone.add("now.test", "MX", "10 mx.now.test.")
    zone.add("mx.now.test", "A", f"{loopback_net}.2")
    deferring: GatedHandler = gated_mx(f"{loopback_net}.1", "RCPT", Behaviour(defer={"u@later.test"}))
    relaying: GatedHandler = gated_mx(f"{loopback_net}.2", "DATA")
    start_service(
        "delivery",
        POSTROOM_AMQP_URL=node.url,
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_DELIVERY_DNS_TIMEOUT="2s",
        POSTROOM_RETRY_SCHEDULE=SCHEDULE,
    )
    incoming = node_broker.topology.incoming
    deferred = await node_broker.publish(["u@later.test"])
    relayed = [await node_broker.publish([f"r{i}@now.test"]) for i in range(3)]

    async def all_at_the_gates() -> bool:
        return deferring.waiting == 1 and relaying.waiting == 3

    await wait_until(all_at_the_gates, 60, what="four SMTP sessions held at the gates")

    with node.memory_alarm():
        deferring.gate.set()  # 450 → the delivery publishes a retry, and the broker blocks that connection

        async def publisher_blocked() -> bool:
            return any(state == "blocked" for _, state in delivery_connections(node))

        await wait_until(publisher_blocked, 60, interval=0.5, what="the delivery's publishing connection blocked")
        relaying.gate.set()  # 250 for the three: finished, their acks go out

        async def only_the_deferred_one_unacked() -> bool:
            return node.queue_counts(incoming) == (0, 1)

        await wait_until(only_the_deferred_one_unacked, 45, interval=1.0, what="the three relayed messages acked")
        assert len(relaying.received) == 3
        states = dict(delivery_connections(node))
        assert states == {"postroom-delivery-consumer": "blocking", "postroom-delivery-publisher": "blocked"}

    # Alarm over: the retry is confirmed, the deferred message acked, and its retry queued once.
    async def settled() -> bool:
        return node.queue_counts(incoming) == (0, 0)

    await wait_until(settled, 60, interval=1.0, what="the deferred message acked after the alarm")
    [retry] = await node_broker.get_all(node_broker.topology.delay_queue(DELAY_SECONDS))
    assert retry.message_id == deferred.queue_id
    assert sorted(r.rcpt_tos[0] for r in relaying.received) == sorted(e.recipients[0] for e in relayed)


async def test_both_connections_come_back_after_the_broker_drops_them(
    rabbitmq_node: RabbitMQNode,
    node_broker: Broker,
    namespace: str,
    start_service: Callable[..., ServiceProcess],
    store: Store,
    local_users: Any,
    zone: Any,
    dns_server: Any,
    loopback_net: str,
) -> None:
    """`rabbitmqctl close_all_connections`: /readyz says not ready until both the consumer and the publisher are back,
    then a message is stored (consumer) and another deferred (publisher) as before."""
    node = rabbitmq_node
    await local_users("alice@example.test")
    zone.add("down.test", "A", f"{loopback_net}.9")  # nothing listens there: connection refused, deferred
    service = start_service(
        "delivery",
        POSTROOM_AMQP_URL=node.url,
        POSTROOM_DNS_NAMESERVERS=dns_server.nameserver,
        POSTROOM_DELIVERY_DNS_TIMEOUT="2s",
        POSTROOM_RELAY_CONNECT_TIMEOUT="2s",
        POSTROOM_RETRY_SCHEDULE=SCHEDULE,
    )
    names = sorted(name for name, _ in delivery_connections(node))
    assert names == ["postroom-delivery-consumer", "postroom-delivery-publisher"]
    node.close_connections()

    async def reconnected() -> bool:
        return http_status(f"{service.metrics_url}/readyz") == 200 and len(delivery_connections(node)) == 2

    await wait_until(reconnected, 60, interval=0.5, what="both connections back and ready")
    # The test's own connection was closed too, and may still be reconnecting: publish on a new one.
    publishing = await aio_pika.connect_robust(node.url)
    try:
        fresh = Broker(publishing, namespace)
        await fresh.start()
        stored = await fresh.publish(["alice@example.test"])
        deferred = await fresh.publish(["u@down.test"])
    finally:
        await publishing.close()
    delay_queue = node_broker.topology.delay_queue(DELAY_SECONDS)

    async def done() -> bool:
        return len(await mailbox(store, "alice@example.test")) == 1 and await node_broker.depth(delay_queue) == 1

    await wait_until(done, 60, what="one message stored, one deferred")
    [retry] = await node_broker.get_all(delay_queue)
    assert retry.message_id == deferred.queue_id
    assert [m.uid for m in await store.mailboxes.snapshot("alice@example.test")] == [stored.queue_id]


async def test_a_retry_publish_waits_out_the_block_without_writing(
    rabbitmq_node: RabbitMQNode, node_broker: Broker, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish that times out while the broker blocks the connection has written nothing, so the broker does not
    queue it when the alarm clears (the message, redelivered meanwhile, publishes its retry again: that one counts).
    Only the publish that met the alarm first was written: the broker says it blocks a connection only then."""
    node = rabbitmq_node
    monkeypatch.setattr(publisher_module, "PUBLISH_TIMEOUT", 2.0)
    connection = await connect_amqp(node.url, "postroom-test-publisher")
    publisher = DeliveryPublisher(connection, Topology(namespace), (DELAY_SECONDS,))
    await publisher.start()
    first, second, third = (Envelope(new_queue_id(), "s@remote.test", ("u@later.test",)) for _ in range(3))
    try:
        with node.memory_alarm():
            with pytest.raises(TimeoutError):
                await publisher.defer(b"first", first, DELAY_SECONDS)
            assert publishing_blocked(connection)
            with pytest.raises(TimeoutError):
                await publisher.defer(b"second", second, DELAY_SECONDS)
        # Confirmed after everything written before it on this connection has been read by the broker.
        await publisher.defer(b"third", third, DELAY_SECONDS)
        assert not publishing_blocked(connection)
    finally:
        await publisher.close()
        await connection.close()
    queued = [m.message_id for m in await node_broker.get_all(node_broker.topology.delay_queue(DELAY_SECONDS))]
    assert queued == [first.queue_id, third.queue_id]
