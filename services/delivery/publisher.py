"""Publishing retries and bounces: persistent, mandatory, and awaited until the broker confirms (invariant 3)."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.abc import AbstractConnection
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError, ConnectionClosed

from shared.amqp_frames import body_frames, content_header_frame, publish_frame, publish_streamed
from shared.envelope import Envelope
from shared.logging import get_logger
from shared.topology import Topology

log = get_logger(__name__)

PUBLISH_TIMEOUT = 30.0
# Bodies above this go out a frame at a time (shared/amqp_frames.py) instead of through aio_pika, whose
# basic_publish holds two extra copies of the body until it is written: for a 25 MiB retry that is 50 MiB more
# (issue 8's 4x budget broken). Below 1 MiB (8 of RabbitMQ's 128 KiB frames) those copies cost at most 2 MiB per
# publish, and the one-buffer write is cheaper than waiting for the socket to drain after every frame; bounces and
# most retries are far smaller.
STREAM_THRESHOLD = 1 << 20


class DeliveryPublisher:
    """One confirming channel; `publish` returns only once the broker has the message, and raises otherwise.

    Its connection is not the consumer's: RabbitMQ blocks a connection that publishes during a resource alarm and
    then reads nothing from it, so acks sent on the same connection would wait behind a blocked retry.
    """

    def __init__(self, connection: AbstractRobustConnection, topology: Topology, delays: tuple[int, ...]) -> None:
        self.connection = connection
        self.topology = topology
        self.delays = delays
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the channel and declare the topology, delay queues of the retry schedule included."""
        self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self.topology.declare(self._channel, sorted(set(self.delays)))

    async def close(self) -> None:
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def defer(self, body: bytes, envelope: Envelope, delay: int) -> None:
        """Into the delay queue of `delay` seconds, which dead-letters it back into `incoming` when it expires."""
        if delay not in self.delays:
            raise ValueError(f"no delay queue of {delay}s declared")
        await self._publish(body, envelope, self.topology.delay_queue(delay))

    async def enqueue(self, body: bytes, envelope: Envelope) -> None:
        """Into `incoming`, as the ingress does (used for bounces and delay notices)."""
        await self._publish(body, envelope, self.topology.incoming)

    @property
    def ready(self) -> bool:
        """The confirming channel is open (false while the robust connection reconnects)."""
        return self._channel is not None and not self._channel.is_closed

    async def _publish(self, body: bytes, envelope: Envelope, routing_key: str) -> None:
        if self._exchange is None or self._channel is None:
            raise RuntimeError("publisher not started")
        # The whole publish, the wait for an alarm to clear, for the channel lock and for the confirm included.
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            # While the broker blocks this connection (a memory or disk alarm) it reads nothing from it: a message
            # written then would sit in its socket past the timeout and still be queued when the alarm clears, next
            # to the one published again after the redelivery. Wait, writing nothing, until it is unblocked.
            underlay = await self._channel.get_underlay_channel()
            await underlay.connection.ready()
            if len(body) > STREAM_THRESHOLD:
                await self._publish_streamed(body, envelope, routing_key)
                return
            message = aio_pika.Message(
                body,
                headers=envelope.to_headers(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=envelope.queue_id,
            )
            # mandatory + on_return_raises: an unroutable message raises instead of vanishing.
            await self._exchange.publish(message, routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT)

    async def _publish_streamed(self, body: bytes, envelope: Envelope, routing_key: str) -> None:
        """The message aio_pika would publish (same frames, tests/delivery/test_publisher.py), written a frame at a
        time from slices of `body`: one frame more in memory instead of two copies of the body."""
        assert self._channel is not None and self._exchange is not None
        if self._channel.is_closed:
            raise ChannelInvalidStateError(f"{self._channel!r} closed")
        channel = await self._channel.get_underlay_channel()
        assert isinstance(channel, Channel) and channel.publisher_confirms
        number, limit = channel.number, channel.max_content_size
        view = memoryview(body)
        frames = body_frames(
            publish_frame(number, self._exchange.name, routing_key) + content_header_frame(number, len(body), envelope),
            number,
            (view[start : start + limit] for start in range(0, len(body), limit)),
            len(body),
        )
        connection = channel.connection

        def drop_connection() -> None:
            # Part of the message went out and the channel is inside an unfinished content: close this connection
            # (the broker discards the incomplete message); the robust connection then opens a new one and restores
            # the channels. The message being worked on was not acked, nor were the others in hand on the consumer's
            # channel of that connection: the broker redelivers them all. Local recipients already stored are
            # stored once (the store's dedup keys); a remote recipient already relayed is skipped (the progress
            # record is written after a relay, before any retry is published), and one whose next hop failed is
            # deferred again, so the retry is queued once in the end.
            log.warning("broker connection dropped after an incomplete publish", queue_id=envelope.queue_id)
            task = asyncio.create_task(_close(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        await publish_streamed(channel, envelope.queue_id, frames, drop_connection)


async def _close(connection: AbstractConnection) -> None:
    """Close an aiormq connection, which may already be closing because the broker went away."""
    with contextlib.suppress(Exception):
        await connection.close(ConnectionClosed(320, "incomplete publish"))
