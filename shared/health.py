"""The HTTP server every service runs: Prometheus `/metrics`, liveness `/healthz` and readiness `/readyz`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import prometheus_client
from aiohttp import web

from shared.netaddr import HostPort

ReadinessCheck = Callable[[], Awaitable[bool]]

# A check that has not answered by then counts as not ready: a Redis or broker that hangs (rather than refusing)
# must not hang /readyz, whose caller (kubelet, compose) gives up after a few seconds and learns nothing.
CHECK_TIMEOUT = 2.0


async def _bounded(check: ReadinessCheck, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return bool(await check())
    except Exception:  # TimeoutError included: not ready, and the reason is in the service's own logs
        return False


async def run_checks(checks: dict[str, ReadinessCheck], timeout: float = CHECK_TIMEOUT) -> dict[str, bool]:
    """Every check's answer, all run at once, each within `timeout` (a check that raises is not ready)."""
    names = list(checks)
    answers = await asyncio.gather(*(_bounded(checks[name], timeout) for name in names))
    return dict(zip(names, answers, strict=True))


class HealthServer:
    """Serves metrics and health; readiness is the AND of the named checks the service registers."""

    def __init__(self, listen: HostPort, check_timeout: float = CHECK_TIMEOUT) -> None:
        self.listen = listen
        self.check_timeout = check_timeout
        self.checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None
        self.port = listen.port

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def _metrics(self, request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readiness(self) -> dict[str, bool]:
        return await run_checks(self.checks, self.check_timeout)

    async def _readyz(self, request: web.Request) -> web.Response:
        results = await self.readiness()
        ready = bool(results) and all(results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen.host, self.listen.port, reuse_address=True)
        await site.start()
        server = site._server
        if self.listen.port == 0 and server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
