"""`python -m services.pop3`: the POP3 service under the shared runner, or the supervisor of its workers."""

from __future__ import annotations

from services.pop3 import metrics
from services.pop3.app import Pop3App
from services.pop3.config import Pop3Settings
from services.store import passwords
from shared.service import Service
from shared.workers import run_workers


def service(index: int) -> Service[Pop3Settings]:
    return Service(
        name="pop3",
        settings=Pop3Settings,
        app=lambda settings: Pop3App(settings, worker=index),
        metrics=metrics.initialise,
        setup=passwords.configure,
    )


def entry() -> None:
    run_workers("services.pop3", service, lambda settings: settings.pop3_workers)


if __name__ == "__main__":
    entry()
