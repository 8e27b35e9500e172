"""The AMQP topology, declared in one place and idempotently by whichever service starts first.

One direct exchange; the work queue `incoming`; one delay queue per retry step whose messages expire back into
`incoming`; and a `dead` queue for poison messages that exceeded the delivery limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

# How many times a message may be handed to a consumer before RabbitMQ dead-letters it as poison.
DELIVERY_LIMIT = 10


@dataclass(frozen=True)
class Topology:
    """Names of the exchange and queues of one namespace."""

    namespace: str

    @property
    def exchange(self) -> str:
        return self.namespace

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def incoming(self) -> str:
        return f"{self.namespace}.incoming"

    @property
    def dead(self) -> str:
        return f"{self.namespace}.dead"

    def delay_queue(self, seconds: int) -> str:
        return f"{self.namespace}.delay.{seconds}s"

    async def declare(self, channel: AbstractChannel, delays: list[int] | None = None) -> AbstractExchange:
        """Declare exchange, work, dead-letter and delay queues; safe to call from every service at start."""
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        dead_exchange = await channel.declare_exchange(self.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        dead = await channel.declare_queue(self.dead, durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dead_exchange, routing_key=self.incoming)
        incoming = await channel.declare_queue(
            self.incoming,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": self.dead_exchange,
                "x-dead-letter-routing-key": self.incoming,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await incoming.bind(exchange, routing_key=self.incoming)
        for seconds in delays or []:
            await self.declare_delay(channel, exchange, seconds)
        return exchange

    async def declare_delay(self, channel: AbstractChannel, exchange: AbstractExchange, seconds: int) -> str:
        """A delay queue: messages wait `seconds`, then dead-letter back to `incoming`."""
        name = self.delay_queue(seconds)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": self.exchange,
                "x-dead-letter-routing-key": self.incoming,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await queue.bind(exchange, routing_key=name)
        return name
