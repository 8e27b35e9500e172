"""Publishing retries and bounces: persistent, mandatory, and awaited until the broker confirms (invariant 3)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.envelope import Envelope
from shared.topology import Topology

PUBLISH_TIMEOUT = 30.0


class Publisher:
    """One confirming channel; `publish` returns only once the broker has the message, and raises otherwise."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology, delays: tuple[int, ...]) -> None:
        self.connection = connection
        self.topology = topology
        self.delays = delays
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        """Open the channel and declare the topology, delay queues of the retry schedule included."""
        self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self.topology.declare(self._channel, sorted(set(self.delays)))

    async def close(self) -> None:
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

    async def _publish(self, body: bytes, envelope: Envelope, routing_key: str) -> None:
        if self._exchange is None:
            raise RuntimeError("publisher not started")
        message = aio_pika.Message(
            body,
            headers=envelope.to_headers(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.queue_id,
        )
        # mandatory + on_return_raises: an unroutable message raises instead of vanishing.
        await self._exchange.publish(message, routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT)
