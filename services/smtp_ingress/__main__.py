"""`python -m services.smtp_ingress`: the ingress under the shared runner, or the supervisor of its workers."""

from __future__ import annotations

import gc

from services.smtp_ingress import metrics
from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.config import IngressSettings
from services.store import passwords
from shared.service import Service
from shared.workers import run_workers


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


def entry() -> None:
    run_workers("services.smtp_ingress", service, lambda settings: settings.smtp_workers)


if __name__ == "__main__":
    entry()
