"""The store service (Redis, admin API, autoconfig, ACME, totals refresher) assembled for shared/service.py."""

from __future__ import annotations

import asyncio

from services.store import Store, metrics
from services.store.acme import AcmeManager
from services.store.api import AdminServer, create_app
from services.store.clientconfig.app import create_autoconfig_app
from services.store.config import StoreSettings
from services.store.queue_ops import QueueOps
from shared.health import ReadinessCheck
from shared.logging import get_logger
from shared.tasks import cancel_and_wait

log = get_logger(__name__)


class StoreApp:
    """The running store service: the admin API and the refresh of the store's gauges."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.store = Store.connect(
            settings.redis_url,
            settings.namespace,
            settings.redis_cluster,
            trace_retention=settings.trace_retention_seconds,
        )
        self.queue = QueueOps(settings.amqp_url, settings.namespace, settings.retry_schedule)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        if token is None:
            log.warning("POSTROOM_ADMIN_TOKEN is not set: the admin API refuses every request")
        self.admin: AdminServer | None = None
        if settings.admin_listen is not None:
            api = create_app(self.store, token, self.queue)
            self.admin = AdminServer(api, settings.admin_listen, settings.store_drain_timeout)
        # Mail clients' autoconfig: the same small server class as the admin API's, on its own public listener.
        self.autoconfig: AdminServer | None = None
        if settings.autoconfig_listen:
            app = create_autoconfig_app(self.store, settings.hostname, settings.client_endpoints)
            self.autoconfig = AdminServer(app, settings.autoconfig_listen, settings.store_drain_timeout)
        self._refresher: asyncio.Task[None] | None = None
        # Built-in ACME: the listeners' certificate, ordered by one replica at a time, kept in Redis.
        acme = settings.acme
        self.acme = AcmeManager(self.store.acme, acme) if acme is not None else None
        self._acme_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def checks(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"redis": self.store.ping}
        for name, server in (("admin_api", self.admin), ("autoconfig", self.autoconfig)):
            if server is not None:
                checks[name] = _listening(server)
        return checks

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        for server in (self.admin, self.autoconfig):
            if server is not None:
                await server.start()
        refresh = metrics.refresh_stats(
            self.store.redis, self.store.keys, metrics.COLLECTOR, self.settings.stats_interval
        )
        self._refresher = asyncio.create_task(refresh)
        if self.acme is not None:
            self._acme_task = asyncio.create_task(self.acme.run(self._stopping))
        log.info(
            "store serving", admin=str(self.settings.admin_listen), autoconfig=str(self.settings.autoconfig_listen)
        )
        return True

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop the refresher; requests in progress get POSTROOM_STORE_DRAIN_TIMEOUT (set when the API was made)."""
        self._stopping.set()
        for task in (self._refresher, self._acme_task):
            if task is not None:
                await cancel_and_wait(task)
        for server in (self.autoconfig, self.admin):
            if server is not None:
                await server.stop()
        await self.queue.close()
        await self.store.close()


def _listening(server: AdminServer) -> ReadinessCheck:
    async def check() -> bool:
        return server.listening

    return check
