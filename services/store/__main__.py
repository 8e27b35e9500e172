"""`python -m services.store`: the admin API and the store's metrics under the shared runner (shared/service.py)."""

from __future__ import annotations

from services.store import metrics, passwords
from services.store.app import StoreApp
from services.store.config import StoreSettings
from shared.service import Service, run

SERVICE = Service(
    name="store", settings=StoreSettings, app=StoreApp, metrics=metrics.initialise, setup=passwords.configure
)

if __name__ == "__main__":
    run(SERVICE)
