"""Assembles the ingress (store, publisher, handler, listeners, health server) for `__main__` and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings

from services.smtp_ingress import metrics
from services.smtp_ingress.auth import Authenticator
from services.smtp_ingress.checks import Checks
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.handler import IngressHandler
from services.smtp_ingress.inbound import InboundChecks
from services.smtp_ingress.publisher import Publisher
from services.smtp_ingress.server import IngressServer
from services.store import Store
from shared.health import HealthServer
from shared.logging import get_logger
from shared.spool import check_spool_dir

log = get_logger(__name__)


class IngressApp:
    """The running ingress: start, readiness, graceful stop."""

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        # aiosmtpd logs every command (and a deprecation warning per AUTH) on "mail.log"; our own logs suffice.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        # On the implicit-TLS listener AUTH is allowed without STARTTLS because the whole session is TLS.
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning, "aiosmtpd")
        metrics.initialise()
        check_spool_dir(settings.smtp_spool_dir, "POSTROOM_SMTP_SPOOL_DIR")
        # Concurrent sessions share Redis round trips (RCPT lookups, trace writes): see services/store/coalesce.py.
        self.store = Store.connect(settings.redis_url, settings.namespace, settings.redis_cluster, coalesce=True)
        self.publisher = Publisher(settings.amqp_url, settings.namespace, settings.smtp_publish_timeout)
        throttle = self.store.login_throttle(settings.smtp_auth_failure_delay, settings.smtp_auth_failure_delay_max)
        self.inbound = InboundChecks(settings) if settings.inbound_checks else None
        self.checks = Checks(settings, self.store.rate_limits)
        authenticator = Authenticator(self.store, throttle)
        self.handler = IngressHandler(
            settings, self.store, self.publisher, authenticator, inbound=self.inbound, checks=self.checks
        )
        self.server = IngressServer(settings, self.handler, settings.listener_tls(settings.hostname))
        self.health: HealthServer | None = None

    async def start(self) -> None:
        self.publisher.start()
        await self.server.start()
        if self.settings.metrics_listen is not None:
            self.health = HealthServer(self.settings.metrics_listen)
            self.health.add_check("amqp", self._broker_ready)
            self.health.add_check("redis", self._redis_ready)
            self.health.add_check("listeners", self._listeners_ready)
            await self.health.start()
        await self._check_postmaster()

    async def _check_postmaster(self) -> None:
        """Say at start where `RCPT TO:<Postmaster>` goes, or that it goes nowhere (RFC 5321 §4.5.1 wants it to)."""
        try:
            address, why = await asyncio.wait_for(self.handler.postmaster(), 5)
        except Exception as exc:  # Redis not there yet: the RCPT itself will tell, later
            log.warning("postmaster check failed", error=f"{type(exc).__name__}: {exc}")
            return
        if address is None:
            log.warning("postmaster not deliverable", reason=why)
        else:
            log.info("postmaster", address=address)

    async def _broker_ready(self) -> bool:
        return self.publisher.ready

    async def _redis_ready(self) -> bool:
        try:
            return await asyncio.wait_for(self.store.ping(), 2)
        except Exception:
            return False

    async def _listeners_ready(self) -> bool:
        return self.server.listening and not self.server.registry.draining

    async def ready(self) -> bool:
        return await self._broker_ready() and await self._redis_ready() and await self._listeners_ready()

    async def stop(self) -> None:
        """Drain sessions, wait for publishes in flight, then close connections."""
        await self.server.drain(self.settings.smtp_drain_timeout)
        inflight = list(self.handler.inflight)
        if inflight:
            await asyncio.wait(inflight, timeout=self.settings.smtp_publish_timeout)
        await self.publisher.stop()
        if self.inbound is not None:
            self.inbound.close()
        if self.health is not None:
            await self.health.stop()
        with contextlib.suppress(Exception):
            await self.checks.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        log.info("stopped")
