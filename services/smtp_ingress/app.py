"""The ingress assembled (store, publisher, handler, listeners) for `shared/service.py`'s runner and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings

from services.smtp_ingress.auth import Authenticator
from services.smtp_ingress.checks import Checks
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.handler import IngressHandler
from services.smtp_ingress.inbound import InboundChecks
from services.smtp_ingress.publisher import IngressPublisher
from services.smtp_ingress.server import IngressServer
from services.store import Store
from shared.health import ReadinessCheck, run_checks
from shared.logging import get_logger
from shared.spool import check_spool_dir
from shared.workers import worker_checks

log = get_logger(__name__)


class IngressApp:
    """The running ingress: start, readiness, graceful stop. `worker` is this process's index among
    POSTROOM_SMTP_WORKERS (0 when there is one)."""

    def __init__(self, settings: IngressSettings, worker: int = 0) -> None:
        self.settings = settings
        self.worker = worker
        # aiosmtpd logs every command (and a deprecation warning per AUTH) on "mail.log"; our own logs suffice.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        # On the implicit-TLS listener AUTH is allowed without STARTTLS because the whole session is TLS.
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning, "aiosmtpd")
        check_spool_dir(settings.smtp_spool_dir, "POSTROOM_SMTP_SPOOL_DIR")
        # Concurrent sessions share Redis round trips (RCPT lookups, trace writes): see services/store/coalesce.py.
        self.store = Store.connect(settings.redis_url, settings.namespace, settings.redis_cluster, coalesce=True)
        self.publisher = IngressPublisher(settings.amqp_url, settings.namespace, settings.smtp_publish_timeout)
        throttle = self.store.login_throttle(settings.smtp_auth_failure_delay, settings.smtp_auth_failure_delay_max)
        self.inbound = InboundChecks(settings) if settings.inbound_checks else None
        # Limits, blocklists and the content filter (checks.py); `checks()` below is the readiness checks.
        self.screening = Checks(settings, self.store.rate_limits)
        authenticator = Authenticator(self.store, throttle)
        self.handler = IngressHandler(
            settings, self.store, self.publisher, authenticator, inbound=self.inbound, checks=self.screening
        )
        listeners = [
            name
            for name, listen in (
                ("smtp", settings.smtp_listen),
                ("submission", settings.submission_listen),
                ("smtps", settings.smtps_listen),
            )
            if listen
        ]
        self.certificates = settings.listener_certificates(
            settings.hostname, listeners, self.store.certificate_source()
        )
        self.server = IngressServer(settings, self.handler, self.certificates.context)
        self._stopping = asyncio.Event()
        self._certificates_task: asyncio.Task[None] | None = None

    def checks(self) -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {
            "amqp": self._broker_ready,
            "redis": self.store.ping,
            "listeners": self._listeners_ready,
        }
        return checks | worker_checks(self.settings, self.worker, self.settings.smtp_workers)

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        self.publisher.start()
        await self.certificates.refresh("start")  # the store's ACME pair, when there is one, from the first session
        await self.server.start()
        self._certificates_task = asyncio.create_task(self.certificates.run(self._stopping))
        await self._check_postmaster()
        return True

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

    async def _listeners_ready(self) -> bool:
        return self.server.listening and not self.server.registry.draining

    async def ready(self) -> bool:
        """Every check passes (what /readyz says; for tests that run the ingress without a health server)."""
        return all((await run_checks(self.checks())).values())

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Drain sessions (POSTROOM_SMTP_DRAIN_TIMEOUT unless given), wait for publishes in flight, then close."""
        self._stopping.set()
        if self._certificates_task is not None:
            await self._certificates_task
        await self.server.drain(self.settings.smtp_drain_timeout if drain_timeout is None else drain_timeout)
        inflight = list(self.handler.inflight)
        if inflight:
            await asyncio.wait(inflight, timeout=self.settings.smtp_publish_timeout)
        await self.publisher.stop()
        if self.inbound is not None:
            self.inbound.close()
        with contextlib.suppress(Exception):
            await self.screening.close()
        with contextlib.suppress(Exception):
            await self.store.close()
