"""`python -m services.pop3`: the POP3 service under the shared runner, or the supervisor of its workers."""

from __future__ import annotations

import sys

from services.pop3 import metrics
from services.pop3.app import Pop3App
from services.pop3.config import Pop3Settings
from services.store import passwords
from shared.errors import ConfigError
from shared.logging import configure_logging, fatal
from shared.service import Service, run
from shared.settings import load_settings
from shared.workers import for_worker, supervise, worker_index


def service(index: int) -> Service[Pop3Settings]:
    return Service(
        name="pop3",
        settings=Pop3Settings,
        app=lambda settings: Pop3App(settings, worker=index),
        metrics=metrics.initialise,
        setup=passwords.configure,
    )


def entry() -> None:
    index = worker_index(sys.argv)
    if index is None:
        try:
            settings = load_settings(Pop3Settings)
        except ConfigError as exc:
            fatal(f"configuration error: {exc}")
            sys.exit(2)
        if settings.pop3_workers > 1:
            configure_logging(settings.log_level, settings.log_format, service="pop3")
            sys.exit(supervise("services.pop3", settings.pop3_workers))
    run(service(index or 0), lambda: for_worker(load_settings(Pop3Settings), index or 0))


if __name__ == "__main__":
    entry()
