"""`python -m services.delivery`: load settings, start the delivery service, drain on SIGTERM."""

from __future__ import annotations

from services.delivery.app import DeliveryApp
from services.delivery.config import DeliverySettings
from shared.logging import configure_logging
from shared.service import run_service, wait_for_stop_signal, warn_renamed_settings
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(DeliverySettings)
    configure_logging(settings.log_level, settings.log_format, service="delivery")
    warn_renamed_settings(settings)
    stop = wait_for_stop_signal()
    app = DeliveryApp(settings)
    if await app.start(stop):
        await stop.wait()
    await app.stop()


if __name__ == "__main__":
    run_service(main)
