"""`python -m services.delivery`: wiring only — settings, connections, consumer, health; drain on SIGTERM."""

from __future__ import annotations

from services.delivery import metrics
from services.delivery.config import DeliverySettings
from services.delivery.consumer import Consumer
from services.delivery.depth import DepthPoller, queue_labels
from services.delivery.mx import MailResolver
from services.delivery.publisher import Publisher
from services.delivery.remote import RemoteDelivery
from services.store import Store
from shared.connections import connect_amqp
from shared.health import HealthServer
from shared.logging import configure_logging, get_logger
from shared.service import run_service, wait_for_stop_signal
from shared.settings import load_settings
from shared.topology import Topology


async def main() -> None:
    settings = load_settings(DeliverySettings)
    configure_logging(settings.log_level, settings.log_format, service="delivery")
    log = get_logger("services.delivery")
    stop = wait_for_stop_signal()
    labels = queue_labels(Topology(settings.namespace), settings.retry_schedule)
    metrics.init_series(list(labels))

    health = HealthServer(settings.metrics_listen) if settings.metrics_listen else None
    if health is not None:
        await health.start()
    store = Store.connect(settings.redis_url, settings.namespace, settings.redis_cluster)
    connection = await connect_amqp(settings.amqp_url, "postroom-delivery")
    publisher = Publisher(connection, Topology(settings.namespace), settings.retry_schedule)
    await publisher.start()
    remote = RemoteDelivery(settings, MailResolver(settings.dns_nameservers, settings.dns_timeout))
    consumer = Consumer(settings, store, connection, publisher, remote)
    await consumer.start()
    poller = DepthPoller(connection, labels, settings.queue_poll_interval)
    poller.start()
    if health is not None:

        async def consuming() -> bool:
            return consumer.running

        health.add_check("consumer", consuming)
        health.add_check("redis", store.ping)
    log.info("delivery ready", namespace=settings.namespace)

    await stop.wait()
    log.info("stopping: draining messages in hand")
    await consumer.stop()
    await poller.stop()
    await publisher.close()
    await connection.close()
    await store.close()
    if health is not None:
        await health.stop()


run_service(main)
