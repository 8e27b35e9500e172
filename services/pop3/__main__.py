"""`python -m services.pop3`: the POP3 service under the shared runner (shared/service.py)."""

from __future__ import annotations

from services.pop3 import metrics
from services.pop3.app import Pop3App
from services.pop3.config import Pop3Settings
from services.store import passwords
from shared.service import Service, run

SERVICE = Service(
    name="pop3", settings=Pop3Settings, app=Pop3App, metrics=metrics.initialise, setup=passwords.configure
)

if __name__ == "__main__":
    run(SERVICE)
