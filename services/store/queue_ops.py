"""Queue operations over plain AMQP (no management plugin): status, dead letters listed, requeued, purged."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractConnection

from shared.topology import Topology


class QueueOps:
    """Opens an AMQP connection on first use and keeps it; each operation uses channels of its own."""

    def __init__(self, amqp_url: str, namespace: str, delays: list[int]) -> None:
        self.amqp_url = amqp_url
        self.topology = Topology(namespace)
        self.delays = delays
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
