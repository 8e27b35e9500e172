"""Retries above STREAM_THRESHOLD are published a frame at a time: the same message as aio_pika's, confirmed, and
never half-queued when the stream stops part way (invariant 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.exceptions import PublishError
from aiormq.abc import DeliveredMessage
from aiormq.channel import Channel

from services.delivery import publisher as publisher_module
from services.delivery.publisher import STREAM_THRESHOLD, DeliveryPublisher
from shared.amqp_frames import publish_streamed
from shared.envelope import Envelope
from shared.queue_id import new_queue_id
from shared.topology import Topology
from tests.delivery.conftest import Broker, metric
from tests.delivery.test_big_message import MiB, big_message
from tests.faults.proxy import broker_proxy
from tests.harness import ServiceProcess
from tests.helpers import free_port, wait_until

DELAY = 3600  # long enough that nothing dead-letters back to `incoming` during a test


def retry_envelope() -> Envelope:
    return Envelope(
        new_queue_id(),
        "sender@origin.test",
        ("one@remote.test", "zwei@rémote.test"),
        first_seen=1795823142.0333877,
        client_address="2001:db8::1",
        auth_user="sender@origin.test",
        esmtp=("BODY=8BITMIME", "SMTPUTF8"),
        attempt=3,
        last_errors=(("one@remote.test", "451 4.4.1 no answer"), ("zwei@rémote.test", "")),
    )


async def take(connection: aio_pika.abc.AbstractConnection, queue: str) -> list[DeliveredMessage]:
    """Every ready message of `queue`, as aiormq hands it over (the content header's properties included)."""
    channel = await connection.channel()
    try:
        underlay = await channel.get_underlay_channel()
        taken = []
        for _ in range(100):
            got = await underlay.basic_get(queue, no_ack=True)
            if got.delivery is None or not hasattr(got.delivery, "delivery_tag"):
                break
            taken.append(got)
        return taken
    finally:
        await channel.close()


async def started_publisher(connection: aio_pika.abc.AbstractRobustConnection, namespace: str) -> DeliveryPublisher:
    publisher = DeliveryPublisher(connection, Topology(namespace), (DELAY,))
    await publisher.start()
    return publisher


async def test_streamed_publish_queues_what_aio_pika_queues(
    broker: Broker, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = await started_publisher(broker.connection, namespace)
    streamed = 0

    async def counting(*args: Any) -> Any:
        nonlocal streamed
        streamed += 1
        return await publish_streamed(*args)

    monkeypatch.setattr(publisher_module, "publish_streamed", counting)
    envelope = retry_envelope()
    body = big_message(3 * MiB + 777)  # RabbitMQ's 128 KiB frames: 25 of them, the last one partial
    await publisher.defer(body, envelope, DELAY)
    assert streamed == 1
    monkeypatch.setattr(publisher_module, "STREAM_THRESHOLD", len(body))
    await publisher.defer(body, envelope, DELAY)
    assert streamed == 1  # aio_pika's path this time
    await publisher.close()

    frames, through_aio_pika = await take(broker.connection, broker.topology.delay_queue(DELAY))
    assert frames.body == through_aio_pika.body == body
    assert frames.header.properties == through_aio_pika.header.properties
    properties = frames.header.properties
    assert properties.delivery_mode == 2 and properties.message_id == envelope.queue_id
    assert Envelope.from_headers(properties.headers or {}) == envelope
    assert (frames.exchange, frames.routing_key) == (through_aio_pika.exchange, through_aio_pika.routing_key)


async def test_an_unroutable_streamed_publish_raises_and_the_channel_goes_on(broker: Broker, namespace: str) -> None:
    """A return raises as with aio_pika (mandatory, on_return_raises); the stream was whole, so the channel stays."""
    publisher = await started_publisher(broker.connection, namespace)
    body = big_message(STREAM_THRESHOLD + 1)
    envelope = retry_envelope()
    with pytest.raises(PublishError):
        await publisher._publish(body, envelope, f"{namespace}.nowhere")
    await publisher.defer(body, envelope, DELAY)
    [queued] = await take(broker.connection, broker.topology.delay_queue(DELAY))
    assert queued.body == body and queued.header.properties.message_id == envelope.queue_id
    await publisher.close()


async def test_a_stream_stopped_part_way_drops_the_connection_and_queues_nothing(
    broker: Broker, namespace: str
) -> None:
    """Cancelled in the middle of the body frames (as PUBLISH_TIMEOUT would): the connection is dropped, so the
    broker discards the partial message and no later publish puts its frames after it; the robust connection comes
    back and the next publish is queued whole."""
    with broker_proxy() as proxy:
        connection = await aio_pika.connect_robust(f"{proxy.amqp_url}?reconnect_interval=0.2")
        try:
            publisher = await started_publisher(connection, namespace)
            assert publisher._channel is not None
            underlay = await publisher._channel.get_underlay_channel()
            assert isinstance(underlay, Channel)
            # Larger than the stall budget and every buffer on the way (send buffer up to 4 MiB, the proxy's receive
            # buffer up to 32 MiB here: net.ipv4.tcp_wmem/tcp_rmem), so the frames stop part way, not the confirm.
            body = big_message(40 * MiB)
            proxy.stall_after(1 * MiB)
            publishing = asyncio.create_task(publisher.defer(body, retry_envelope(), DELAY))

            async def stalled() -> bool:
                # aiormq's channel lock is held while the frames go out and released before the confirm is awaited.
                return proxy.stalled() and underlay._Channel__lock.locked() and not publishing.done()  # type: ignore[attr-defined]

            await wait_until(stalled, 60, what="publish stalled part way")
            publishing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await publishing
            proxy.resume()  # what was written reaches the broker, then the Connection.Close

            async def dropped() -> bool:
                return underlay.connection.is_closed

            await wait_until(dropped, 30, what="the connection dropped")
            assert await broker.depth(broker.topology.delay_queue(DELAY)) == 0

            async def back() -> bool:
                assert publisher._channel is not None
                return not connection.is_closed and not publisher._channel.is_closed and connection.connected.is_set()

            await wait_until(back, 30, what="reconnected")
            envelope = retry_envelope()
            await publisher.defer(body, envelope, DELAY)
            [queued] = await take(broker.connection, broker.topology.delay_queue(DELAY))
            assert queued.body == body and queued.header.properties.message_id == envelope.queue_id
        finally:
            await connection.close()


async def test_broker_lost_amid_a_big_deferral_defers_it_exactly_once(
    start_service: Callable[..., ServiceProcess], broker: Broker
) -> None:
    """The delivery defers a 24 MiB message (its next hop refuses connections) and the broker connection breaks
    part way through the retry's frames: the original was not acked, the partial retry is not queued, and after the
    reconnect the message is deferred once."""
    with broker_proxy() as proxy:
        delivery = start_service(
            "delivery",
            POSTROOM_AMQP_URL=proxy.amqp_url,
            POSTROOM_RETRY_SCHEDULE=f"{DELAY}s",
            POSTROOM_TRANSPORT_MAP=f"remote.test=[127.0.0.1]:{free_port()}",  # nothing listens: refused
        )
        delay_queue, incoming = broker.topology.delay_queue(DELAY), broker.topology.incoming
        message = big_message(24 * MiB)
        proxy.stall_after(1 * MiB)  # counts only what goes towards the broker: the retry's frames
        envelope = await broker.publish(["one@remote.test"], message)

        async def stalled() -> bool:
            return proxy.stalled()

        await wait_until(stalled, 60, what="the retry's publish stalled part way")
        proxy.cut()

        async def requeued() -> bool:
            return await broker.depth(incoming) == 1

        await wait_until(requeued, 30, what="the unacked original back in its queue")
        assert await broker.depth(delay_queue) == 0
        proxy.enable()
        proxy.resume()

        def deferred() -> float:
            return metric(delivery, 'postroom_delivery_messages_total{result="deferred"}')

        async def deferred_once() -> bool:
            return deferred() == 1

        await wait_until(deferred_once, 60, what="deferred after the reconnect")
        delivery.stop()  # settles its acks
        assert await broker.depth(incoming) == 0
        [retried] = await broker.get_all(delay_queue)
        assert retried.body == message and retried.message_id == envelope.queue_id
        following = Envelope.from_headers(dict(retried.headers))
        assert (following.attempt, following.recipients) == (1, ("one@remote.test",))
        assert "redelivered=True" in delivery.log()  # the first try was never acked: the broker handed it out again
