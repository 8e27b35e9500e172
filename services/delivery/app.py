"""The delivery service assembled (Redis store, broker connections, publisher, consumer, poller) for the runner."""

from __future__ import annotations

import asyncio
import contextlib

from aio_pika.abc import AbstractRobustConnection

from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.delivery.depth import DepthPoller, queue_labels
from services.delivery.dkim import KeyCache, Signer
from services.delivery.mtasts import MtaSts
from services.delivery.mx import MailResolver
from services.delivery.publisher import DeliveryPublisher
from services.delivery.remote import RemoteDelivery
from services.delivery.tls import verified_context
from services.delivery.tlsrpt import TlsReporter, TlsResults
from services.store import Store
from shared.connections import connect_amqp
from shared.health import ReadinessCheck
from shared.logging import get_logger
from shared.spool import check_spool_dir
from shared.topology import Topology

log = get_logger(__name__)

MAX_CONNECT_BACKOFF = 30.0


class DeliveryApp:
    """Starts the parts in order and stops them in reverse; a broker that is down at start is waited for.

    Two broker connections: one consumes and acks (and polls queue depths), the other publishes retries, bounces
    and notices. During a memory or disk alarm RabbitMQ blocks a connection once it publishes and reads nothing
    more from it; on one shared connection the acks of finished messages would wait behind a blocked retry until
    the alarm clears. Each connection reconnects by itself (aio_pika's robust connection).
    """

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        check_spool_dir(settings.delivery_spool_dir, "POSTROOM_DELIVERY_SPOOL_DIR")
        self.labels = queue_labels(Topology(settings.namespace), settings.retry_schedule)
        self.store = Store.connect(
            settings.redis_url,
            settings.namespace,
            settings.redis_cluster,
            socket_connect_timeout=min(5.0, settings.delivery_redis_timeout),
            socket_timeout=settings.delivery_redis_timeout,
            coalesce=True,
        )
        self.consuming: AbstractRobustConnection | None = None  # the consumer's channel (and its acks), depth polls
        self.publishing: AbstractRobustConnection | None = None  # the publisher's confirming channel
        self.publisher: DeliveryPublisher | None = None
        self.consumer: Consumer | None = None
        self.poller: DepthPoller | None = None
        self.mta_sts: MtaSts | None = None
        # TLS-RPT (POSTROOM_TLSRPT_ENABLE): session counts flushed to the store, a daily report from one replica.
        self.tls_results = TlsResults(self.store) if settings.tlsrpt_enable else None
        self._background_stop = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    def checks(self) -> dict[str, ReadinessCheck]:
        return {"consumer": self._consuming, "publisher": self._publishing, "redis": self.store.ping}

    async def start(self, stop: asyncio.Event) -> bool:
        """False when `stop` was set before the broker could be reached."""
        self.consuming = await self._connect(stop, "postroom-delivery-consumer")
        if self.consuming is None:
            return False
        self.publishing = await self._connect(stop, "postroom-delivery-publisher")
        if self.publishing is None:
            return False
        topology = Topology(self.settings.namespace)
        self.publisher = DeliveryPublisher(self.publishing, topology, self.settings.retry_schedule)
        await self.publisher.start()
        resolver = MailResolver(self.settings.dns_nameservers, self.settings.delivery_dns_timeout)
        # The policy hosts' HTTPS is checked against the same CAs as the MX hosts under an enforced policy.
        self.mta_sts = MtaSts(resolver, self.store.tls_policies, verified_context(self.settings.delivery_tls_ca_file))
        remote = RemoteDelivery(self.settings, resolver, self.mta_sts, self.tls_results)
        if self.tls_results is not None:
            reporter = TlsReporter(self.store, resolver, self.publisher.enqueue, self.settings.hostname, str(id(self)))
            self._background += [
                asyncio.create_task(self.tls_results.run(self._background_stop)),
                asyncio.create_task(reporter.run(self._background_stop)),
            ]
        signer = Signer(KeyCache(self.store.dkim), self.settings.trusted_networks, self.settings.dkim_signing)
        self.consumer = Consumer(self.settings, self.store, self.consuming, self.publisher, remote, signer)
        await self.consumer.start()
        self.poller = DepthPoller(self.consuming, self.labels, self.settings.delivery_queue_poll_interval)
        self.poller.start()
        log.info("delivery ready", namespace=self.settings.namespace)
        return True

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop consuming, finish the messages in hand (POSTROOM_DELIVERY_DRAIN_TIMEOUT unless given), close all.

        What is still in hand after the drain goes back to the queue unacked; the broker redelivers it, and the dedup
        keys and progress records make that safe.
        """
        log.info("stopping: draining messages in hand")
        if self.consumer is not None:
            await self.consumer.stop(drain_timeout)
        if self.poller is not None:
            await self.poller.stop()
        self._background_stop.set()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.mta_sts is not None:
            await self.mta_sts.close()
        if self.publisher is not None:
            await self.publisher.close()
        for connection in (self.publishing, self.consuming):
            if connection is not None:
                await connection.close()
        await self.store.close()

    async def _consuming(self) -> bool:
        return self.consumer is not None and self.consumer.running

    async def _publishing(self) -> bool:
        return self.publisher is not None and self.publisher.ready

    async def _connect(self, stop: asyncio.Event, name: str) -> AbstractRobustConnection | None:
        delay = 1.0
        while not stop.is_set():
            try:
                return await connect_amqp(self.settings.amqp_url, name)
            except Exception as exc:
                log.warning("broker unreachable; retrying", error=str(exc), retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, MAX_CONNECT_BACKOFF)
        return None
