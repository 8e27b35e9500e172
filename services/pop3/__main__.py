"""`python -m services.pop3`: load settings, connect the store, start the listeners and health, wait, drain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.pop3.config import Pop3Settings
from services.pop3.server import Pop3Server
from services.pop3.state import ServerContext
from services.store import Store, passwords
from shared.connections import connect_redis
from shared.health import HealthServer
from shared.logging import configure_logging, get_logger
from shared.service import run_service, wait_for_stop_signal
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(Pop3Settings)
    configure_logging(settings.log_level, settings.log_format, service="pop3")
    log = get_logger("services.pop3")
    passwords.configure(settings)
    store = Store(_redis(settings), settings.namespace)
    ctx = ServerContext(
        settings=settings,
        store=store,
        tls_context=settings.listener_tls(settings.hostname),
        throttle=store.login_throttle(settings.pop3_auth_failure_delay, settings.pop3_auth_failure_delay_max),
    )
    server = Pop3Server(ctx)
    health = HealthServer(settings.metrics_listen) if settings.metrics_listen is not None else None
    stop = wait_for_stop_signal()
    await server.start()
    if health is not None:
        health.add_check("redis", store.ping)
        health.add_check("listeners", _serving(server))
        await health.start()
    log.info("pop3 ready", listeners={name: port for name, port in server.ports.items()})
    await stop.wait()
    log.info("pop3 stopping", sessions=server.session_count)
    await server.stop()
    if health is not None:
        await health.stop()
    await store.close()


def _redis(settings: Pop3Settings) -> Any:
    """Hundreds of POP3 sessions reading at once queue for a pooled connection rather than fail."""
    return connect_redis(settings.redis_url, settings.redis_cluster, max_connections=settings.pop3_redis_connections)


def _serving(server: Pop3Server) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.serving

    return check


if __name__ == "__main__":
    run_service(main)
