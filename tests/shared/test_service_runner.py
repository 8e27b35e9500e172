"""The one skeleton of the four services (shared/service.py): settings, health, signal, drain."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.delivery.__main__ import SERVICE as DELIVERY
from services.pop3.__main__ import service as pop3_service
from services.smtp_ingress.__main__ import service as ingress_service
from services.store.__main__ import SERVICE as STORE
from shared.service import Service
from shared.settings import CommonSettings, load_settings
from tests.helpers import ServiceProcess, http_status

POP3 = pop3_service(0)
SERVICES: list[Service[CommonSettings]] = [ingress_service(0), POP3, DELIVERY, STORE]  # type: ignore[list-item]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_drains_for_its_own_drain_timeout(monkeypatch: pytest.MonkeyPatch, service: Service) -> None:  # type: ignore[type-arg]
    variable = f"POSTROOM_{service.name.upper()}_DRAIN_TIMEOUT"
    monkeypatch.setenv(variable, "7s")
    assert service.drain_timeout(load_settings(service.settings)) == 7.0


def test_pop3s_old_grace_name_is_its_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_POP3_SHUTDOWN_GRACE", "3s")
    settings = load_settings(POP3.settings)
    assert POP3.drain_timeout(settings) == 3.0
    assert settings.old_names_used == (("POSTROOM_POP3_SHUTDOWN_GRACE", "POSTROOM_POP3_DRAIN_TIMEOUT"),)


@pytest.mark.parametrize("name", ["store", "pop3"])
def test_sigterm_drains_and_exits_cleanly(start_service: Callable[..., ServiceProcess], name: str) -> None:
    service = start_service(name, POSTROOM_STORE_DRAIN_TIMEOUT="2s", POSTROOM_POP3_DRAIN_TIMEOUT="2s")
    assert http_status(f"{service.metrics_url}/healthz") == 200
    assert service.stop() == 0
    log = service.log()
    assert "ready" in log and "stopping" in log and "drain_timeout=2.0" in log and "stopped" in log
    assert "Traceback" not in log
