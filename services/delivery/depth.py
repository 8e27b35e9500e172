"""Queue depth gauges: incoming, each delay queue and dead, polled with passive declares (zero until known)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from services.delivery import metrics
from shared.logging import get_logger
from shared.tasks import cancel_and_wait
from shared.topology import Topology

log = get_logger(__name__)


def queue_labels(topology: Topology, delays: tuple[int, ...]) -> dict[str, str]:
    """Gauge label → queue name; labels are bounded by the configured retry schedule."""
    labels = {"incoming": topology.incoming, "dead": topology.dead}
    for seconds in sorted(set(delays)):
        labels[f"delay.{seconds}s"] = topology.delay_queue(seconds)
    return labels


class DepthPoller:
    """Refreshes the depth gauges every `interval` seconds until stopped."""

    def __init__(self, connection: AbstractRobustConnection, labels: dict[str, str], interval: float) -> None:
        self.connection = connection
        self.labels = labels
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._channel: Any = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def poll_once(self) -> None:
        for label, name in self.labels.items():
            if self._channel is None or self._channel.is_closed:
                # A passive declare of a missing queue closes the channel (404), so it gets a channel of its own.
                self._channel = await self.connection.channel()
            try:
                # The raw AMQP method: aio-pika's declare_queue may answer from its cache without asking the broker.
                underlay = await self._channel.get_underlay_channel()
                result = await underlay.queue_declare(name, passive=True)
            except Exception as exc:
                log.debug("queue depth unavailable", queue=name, error=str(exc))
                continue
            metrics.QUEUE_DEPTH.labels(label).set(result.message_count or 0)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:
                log.warning("queue depth poll failed", error=str(exc))
            await asyncio.sleep(self.interval)
