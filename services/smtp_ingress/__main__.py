"""`python -m services.smtp_ingress`: the ingress under the shared runner, or the supervisor of its workers."""

from __future__ import annotations

import gc
import sys

from services.smtp_ingress import metrics
from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.config import IngressSettings
from services.store import passwords
from shared.errors import ConfigError
from shared.logging import configure_logging, fatal
from shared.service import Service, run
from shared.settings import load_settings
from shared.workers import for_worker, supervise, worker_index


def service(index: int) -> Service[IngressSettings]:
    return Service(
        name="smtp",
        settings=IngressSettings,
        app=lambda settings: IngressApp(settings, worker=index),
        metrics=lambda _settings: metrics.initialise(),
        setup=passwords.configure,
        # What exists once ready (modules, settings, clients) lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise walk all ~95,000 of these objects (~70 ms a pass).
        ready=gc.freeze,
    )


def worker_settings(index: int) -> IngressSettings:
    return for_worker(load_settings(IngressSettings), index)


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
            sys.exit(supervise("services.smtp_ingress", settings.smtp_workers))
    run(service(index or 0), lambda: worker_settings(index or 0))


if __name__ == "__main__":
    entry()
