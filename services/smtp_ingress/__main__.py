"""`python -m services.smtp_ingress`: load settings, start the ingress, drain on SIGTERM."""

from __future__ import annotations

from services.smtp_ingress.app import IngressApp
from services.smtp_ingress.config import IngressSettings
from shared.logging import configure_logging
from shared.service import run_service, wait_for_stop_signal
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(IngressSettings)
    configure_logging(settings.log_level, settings.log_format, service="smtp")
    stop = wait_for_stop_signal()
    app = IngressApp(settings)
    await app.start()
    await stop.wait()
    await app.stop()


if __name__ == "__main__":
    run_service(main)
