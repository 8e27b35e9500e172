"""Prefetch and concurrency: the consumer works on at most `concurrency` messages at once, and really in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika

from services.delivery import outcome
from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.delivery.outcome import RecipientOutcome
from services.delivery.publisher import DeliveryPublisher
from services.delivery.routing import Target
from services.store import Store
from shared.envelope import Envelope
from shared.settings import load_settings
from tests.delivery.conftest import Broker
from tests.helpers import AMQP_URL, wait_until


class GatedRemote:
    """Holds every delivery until released, counting how many are held at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.done = 0
        self.gate = asyncio.Event()

    async def __call__(
        self, envelope: Envelope, body: bytes, domain: str, targets: Sequence[Target], signature: bytes = b""
    ) -> list[RecipientOutcome]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await self.gate.wait()
        self.active -= 1
        self.done += 1
        return [outcome.delivered(t.address, "250 ok", "smtp", "mx.remote.test") for t in targets]


async def test_concurrency_bounds_parallel_work(store: Store, broker: Broker, namespace: str) -> None:
    settings = load_settings(
        DeliverySettings, namespace=namespace, delivery_prefetch=20, delivery_concurrency=4, retry_schedule="1s,2s"
    )
    connection: Any = await aio_pika.connect_robust(AMQP_URL)
    remote = GatedRemote()
    publisher = DeliveryPublisher(connection, broker.topology, settings.retry_schedule)
    await publisher.start()
    consumer = Consumer(settings, store, connection, publisher, remote)
    await consumer.start()
    try:
        for i in range(10):
            await broker.publish([f"user{i}@remote.test"])

        async def saturated() -> bool:
            return remote.active == 4

        await wait_until(saturated, what="four deliveries in parallel")
        remote.gate.set()

        async def finished() -> bool:
            return remote.done == 10

        await wait_until(finished, what="all ten delivered")
        assert remote.peak == 4
    finally:
        await consumer.stop()
        await publisher.close()
        await connection.close()
