"""`python -m services.store`: the admin API and the store's metrics/health server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.store import Store, passwords
from services.store.api import AdminServer, create_app
from services.store.clientconfig.app import create_autoconfig_app
from services.store.config import StoreSettings
from services.store.metrics import refresh_stats, register_stats_collector
from services.store.queue_ops import QueueOps
from shared.health import HealthServer
from shared.logging import configure_logging, get_logger
from shared.service import run_service, wait_for_stop_signal
from shared.settings import load_settings
from shared.tasks import cancel_and_wait

log = get_logger("services.store")


def _listening(server: AdminServer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.listening

    return check


async def main() -> None:
    settings = load_settings(StoreSettings)
    configure_logging(settings.log_level, settings.log_format, service="store")
    passwords.configure(settings)
    stop = wait_for_stop_signal()
    store = Store.connect(
        settings.redis_url, settings.namespace, settings.redis_cluster, trace_retention=settings.trace_retention_seconds
    )
    queue = QueueOps(settings.amqp_url, settings.namespace, settings.retry_schedule)
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if token is None:
        log.warning("POSTROOM_ADMIN_TOKEN is not set: the admin API refuses every request")
    admin = AdminServer(create_app(store, token, queue), settings.admin_listen) if settings.admin_listen else None
    autoconfig = None
    if settings.autoconfig_listen:
        # The same small server class as the admin API's, on its own public listener with its own app.
        app = create_autoconfig_app(store, settings.hostname, settings.client_endpoints)
        autoconfig = AdminServer(app, settings.autoconfig_listen)
    health = HealthServer(settings.metrics_listen) if settings.metrics_listen else None
    collector = register_stats_collector()
    if health is not None:
        health.add_check("redis", store.ping)
        for name, server in (("admin_api", admin), ("autoconfig", autoconfig)):
            if server is not None:
                health.add_check(name, _listening(server))
        await health.start()
    if admin is not None:
        await admin.start()
    if autoconfig is not None:
        await autoconfig.start()
    log.info(
        "store started",
        admin=str(settings.admin_listen),
        autoconfig=str(settings.autoconfig_listen),
        metrics=str(settings.metrics_listen),
    )
    refresher = asyncio.create_task(refresh_stats(store.redis, store.keys, collector, settings.stats_interval))
    await stop.wait()
    log.info("store stopping")
    await cancel_and_wait(refresher)
    if autoconfig is not None:
        await autoconfig.stop()
    if admin is not None:
        await admin.stop()
    if health is not None:
        await health.stop()
    await queue.close()
    await store.close()


if __name__ == "__main__":
    run_service(main)
