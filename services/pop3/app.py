"""The POP3 service assembled (store, login throttle, TLS, listeners) for `shared/service.py`'s runner."""

from __future__ import annotations

import asyncio
from typing import Any

from services.pop3.config import Pop3Settings
from services.pop3.server import Pop3Server
from services.pop3.state import ServerContext
from services.store import Store
from shared.connections import connect_redis
from shared.health import ReadinessCheck
from shared.logging import get_logger
from shared.workers import worker_checks

log = get_logger(__name__)


class Pop3App:
    """The running POP3 service: start, readiness, graceful stop. `worker` is this process's index among
    POSTROOM_POP3_WORKERS (0 when there is one)."""

    def __init__(self, settings: Pop3Settings, worker: int = 0) -> None:
        self.settings = settings
        self.worker = worker
        self.store = Store(_redis(settings), settings.namespace)
        throttle = self.store.login_throttle(settings.pop3_auth_failure_delay, settings.pop3_auth_failure_delay_max)
        listeners = [
            name for name, listen in (("pop3", settings.pop3_listen), ("pop3s", settings.pop3s_listen)) if listen
        ]
        self.certificates = settings.listener_certificates(
            settings.hostname, listeners, self.store.certificate_source()
        )
        tls = self.certificates.context
        self.server = Pop3Server(ServerContext(settings=settings, store=self.store, tls_context=tls, throttle=throttle))
        self._stopping = asyncio.Event()
        self._certificates_task: asyncio.Task[None] | None = None

    def checks(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {"redis": self.store.ping, "listeners": self._serving}
        return checks | worker_checks(self.settings, self.worker, self.settings.pop3_workers)

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        await self.certificates.refresh("start")  # the store's ACME pair, when there is one, from the first session
        await self.server.start()
        self._certificates_task = asyncio.create_task(self.certificates.run(self._stopping))
        log.info("pop3 listening", listeners=dict(self.server.ports))
        return True

    async def stop(self, drain_timeout: float | None = None) -> None:
        """End idle sessions now, busy ones after their command (at most `drain_timeout`); nothing is deleted."""
        log.info("pop3 draining", sessions=self.server.session_count)
        self._stopping.set()
        if self._certificates_task is not None:
            await self._certificates_task
        await self.server.stop(drain_timeout)
        await self.store.close()

    async def _serving(self) -> bool:
        return self.server.serving


def _redis(settings: Pop3Settings) -> Any:
    """Hundreds of POP3 sessions reading at once queue for a pooled connection rather than fail."""
    return connect_redis(settings.redis_url, settings.redis_cluster, max_connections=settings.pop3_redis_connections)
