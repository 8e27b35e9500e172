"""`python -m services.smtp_ingress`: load settings, start the ingress (or its workers), drain on SIGTERM."""

from __future__ import annotations

import dataclasses
import gc
import sys

from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.config import IngressSettings
from services.smtp_ingress.workers import siblings_ready, supervise, worker_index
from services.store import passwords
from shared.errors import ConfigError
from shared.logging import configure_logging, fatal
from shared.service import run_service, wait_for_stop_signal
from shared.settings import load_settings


async def main(index: int) -> None:
    settings = load_settings(IngressSettings)
    if index and settings.metrics_listen is not None and settings.metrics_listen.port:
        # Worker i's own /metrics: counters are per process, so each worker is scraped on its own port.
        port = settings.metrics_listen.port + index
        settings = settings.model_copy(
            update={"metrics_listen": dataclasses.replace(settings.metrics_listen, port=port)}
        )
    configure_logging(settings.log_level, settings.log_format, service="smtp")
    passwords.configure(settings)
    stop = wait_for_stop_signal()
    app = IngressApp(settings)
    await app.start()
    listen = settings.metrics_listen
    if index == 0 and settings.smtp_workers > 1 and app.health is not None and listen is not None and listen.port:
        # The base port's /readyz speaks for every worker (the orchestrator probes that one).
        app.health.add_check("workers", siblings_ready(listen, settings.smtp_workers))
    # What exists now (modules, settings, clients) lives as long as the process: keep it out of the cyclic
    # collector's full passes, which otherwise walk all ~95,000 of these objects (~70 ms a pass) under load.
    gc.freeze()
    await stop.wait()
    await app.stop()


def entry() -> None:
    index = worker_index(sys.argv)
    if index is None:
        try:
            settings = load_settings(IngressSettings)
        except ConfigError as exc:
            fatal(f"configuration error: {exc}")
            sys.exit(2)
        if settings.smtp_workers > 1:
            configure_logging(settings.log_level, settings.log_format, service="smtp")
            sys.exit(supervise(settings.smtp_workers))
    run_service(lambda: main(index or 0))


if __name__ == "__main__":
    entry()
